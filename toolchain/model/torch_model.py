"""Read PyTorch models: a torch.export program (.pt2, torch.export.save) and TorchScript (.pt/.pth, torch.jit.save).

Neither loader unpickles arbitrary objects: torch.export.load reads a JSON graph and weights, torch.jit.load
TorchScript's restricted archive. A module pickled with torch.save is refused (loading it would run its pickle),
with a sentence saying how to export one. torch is imported inside the functions: it takes seconds.
"""

import zipfile
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import BadInput, reason
from .info import ModelInfo, TensorInfo
from .pinning import check_input_names, pin_shape, pinning_repairs

EXPORT_HINT = ("export it with torch.export.save(torch.export.export(model, example_inputs), 'model.pt2'), "
               "or torch.jit.save(torch.jit.script(model), 'model.pt')")
# TorchScript records no dtypes for its tensor arguments: float32, as models are trained.
TORCHSCRIPT_INPUT_DTYPE = "float32"


def read_torch(path: Path, sha256: str, fmt: str, input_shapes: dict[str, tuple[int, ...]]) -> ModelInfo:
    """ModelInfo of a torch.export program ("torch-export") or a TorchScript module ("torchscript"); the model runs
    once on zeros at the pinned shapes for its outputs and MACs (PyTorch's FLOP counter: 2 FLOPs per MAC)."""
    program = load_program(path, fmt)  # a file that is no PyTorch archive is refused before torch loads
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    declared = _exported_inputs(program) if fmt == "torch-export" else _script_inputs(path, program)
    check_input_names(path, input_shapes, list(declared))
    unshaped = [name for name, (dims, _) in declared.items() if dims is None and name not in input_shapes]
    if unshaped:
        raise BadInput(f"{path} is TorchScript, which records no input shapes; give them with --input-shape "
                       f"{unshaped[0]}:1x3x32x32 (one per input: {', '.join(unshaped)}).")
    inputs = [TensorInfo(name, pin_shape(path, name, dims, input_shapes.get(name)), dtype)
              for name, (dims, dtype) in declared.items()]
    zeros = [torch.from_numpy(np.zeros(t.shape, dtype=t.dtype)) for t in inputs]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            results = torch_callable(program)(*zeros)
    except Exception as err:  # whatever the model's own code raises at these shapes
        raise BadInput(f"{path} does not run at input shapes {[list(t.shape) for t in inputs]} ({reason(err)}); "
                       "give them with --input-shape NAME:SHAPE.") from None
    results = flat_outputs(path, results)
    names = _output_names(program, fmt, len(results))
    outputs = [TensorInfo(name, tuple(r.shape), str(r.dtype).removeprefix("torch.")) for name, r in zip(names, results)]
    if fmt == "torch-export":
        weights = [*program.state_dict.values(), *program.constants.values()]
    else:
        weights = list(program.state_dict().values())
    return ModelInfo(
        path=path, format=fmt, sha256=sha256, inputs=inputs, outputs=outputs, ops=_ops(program, fmt),
        params=sum(int(w.numel()) for w in weights if isinstance(w, torch.Tensor)),
        macs=counter.get_total_flops() // 2,
        repairs=pinning_repairs([dims for dims, _ in declared.values()], inputs, input_shapes),
    )


def load_program(path: Path, fmt: str):
    """The ExportedProgram or ScriptModule in `path`; BadInput for a pickle, a damaged or a foreign file."""
    return _load_program(Path(path), fmt, path.stat().st_mtime_ns, path.stat().st_size)


@lru_cache(maxsize=4)
def _load_program(path: Path, fmt: str, mtime_ns: int, size: int):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise BadInput(f"{path} is not a PyTorch archive ({reason(err)}); {EXPORT_HINT}.") from None
    if fmt == "torchscript" and not any("/code/" in name for name in names):
        raise BadInput(f"{path} is a pickled PyTorch object (torch.save), not TorchScript, and loading it would run "
                       f"its pickle; {EXPORT_HINT}.")
    import torch

    try:
        if fmt == "torch-export":
            return torch.export.load(str(path))
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:  # damaged archives raise RuntimeError, KeyError, json errors, ...
        kind = "torch.export program" if fmt == "torch-export" else "TorchScript module"
        raise BadInput(f"{path} is not a readable {kind} ({reason(err)}).") from None


def torch_callable(program):
    """What runs the model: an ExportedProgram's module, or the ScriptModule itself."""
    import torch

    return program if isinstance(program, torch.jit.ScriptModule) else program.module()


def flat_outputs(path: Path, results) -> list:
    """A model's result as a list of tensors (one tensor, or a tuple or list of them)."""
    import torch

    results = list(results) if isinstance(results, (tuple, list)) else [results]
    if not results or not all(isinstance(r, torch.Tensor) for r in results):
        raise BadInput(f"{path} returns {type(results).__name__} values, not a tensor or a tuple of tensors.")
    return results


def reference_runner(info: ModelInfo):
    """One sample (arrays at the pinned shapes) -> the model's outputs as arrays, in PyTorch."""
    import torch

    model = torch_callable(load_program(info.path, info.format))

    def run(sample: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            results = model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in sample))
        return [r.numpy().copy() for r in flat_outputs(info.path, results)]

    return run


def _exported_inputs(program) -> dict[str, tuple[list[int | None], str]]:
    """name -> (declared dims with symbolic ones as None, dtype) of an ExportedProgram's user inputs."""
    import torch

    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    declared = {}
    for name in program.graph_signature.user_inputs:
        value = placeholders[name].meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise BadInput(f"input {name!r} of the exported program is a {type(value).__name__}, not a tensor.")
        dims = [int(d) if isinstance(d, int) else None for d in value.shape]
        declared[name] = (dims, str(value.dtype).removeprefix("torch."))
    return declared


def _script_inputs(path: Path, module) -> dict[str, tuple[None, str]]:
    """name -> (None: rank unknown, float32) of a TorchScript module's forward arguments."""
    arguments = list(module.graph.inputs())[1:]  # the first is the module itself
    declared = {}
    for value in arguments:
        if value.type().kind() != "TensorType":
            raise BadInput(f"{path}: forward argument {value.debugName()!r} is a {value.type()}, not a tensor.")
        declared[value.debugName().split(".")[0]] = (None, TORCHSCRIPT_INPUT_DTYPE)
    return declared


def _output_names(program, fmt: str, count: int) -> list[str]:
    if fmt == "torch-export" and len(program.graph_signature.user_outputs) == count:
        return [str(name) for name in program.graph_signature.user_outputs]
    return [f"output_{k}" for k in range(count)]


def _ops(program, fmt: str) -> dict[str, int]:
    """Op name -> count: aten.conv2d for an exported program's call_function targets, aten::conv2d for TorchScript's
    inlined graph (prim:: nodes are TorchScript's plumbing, not compute)."""
    if fmt == "torch-export":
        return dict(Counter(str(node.target).rsplit(".", 1)[0] for node in program.graph.nodes
                            if node.op == "call_function"))
    return dict(Counter(node.kind() for node in program.inlined_graph.nodes() if not node.kind().startswith("prim::")))
