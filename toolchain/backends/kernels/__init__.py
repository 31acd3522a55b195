"""The kernels backend: an ahead-of-time compiler for int8 TFLite models on Cortex-M.

It walks the model's graph at build time (graph.py), lowers each operator to a call of edgeyard's
own int8 kernel library (firmware/kernels/, SXTB16 + SMLAD inner loops on cores with the DSP
extension, portable C elsewhere) with every parameter precomputed (lower.py), plans all working
memory statically (planner.py), and renders a static driver (templates/kernels_model.c.j2): no
interpreter, no op resolver, no allocation at run time. The arithmetic is TFLite Micro's, bit for
bit, so the reference it is validated against is TFLite Micro's interpreter.

The bundle is harness firmware like the tvm backend's (backends/_firmware.py); src/ holds the model
as C with the kernel sources, ready for the user's own firmware.
"""

import shutil
from pathlib import Path

import numpy as np

from ...codegen import render
from ...errors import BadInput
from ...hostenv import cross
from ...hostenv.tools import Tool
from ...model.info import ModelInfo
from ...paths import FIRMWARE_DIR
from ...target.profile import Target, loadable_targets
from .. import register
from .._firmware import ModelSources, build_firmware, find_tools, firmware_tools
from .._static_model import io_tensors, model_identifier
from ..base import BackendCaps, CompileRequest, CompileResult

KERNELS_DIR = FIRMWARE_DIR / "kernels"
SOURCES = "src"
ALIGNMENT = 8  # of the caller's input and output buffers
CONSTANT_ALIGNMENT = 4
# Element types of constant operands (an ADD's constant input, a PAD's value), as the driver declares them.
C_TYPES = {"int8": "int8_t", "int32": "int32_t", "float32": "float"}


class KernelsBackend:
    name = "kernels"
    caps = BackendCaps(formats=("tflite",), needs_int8=True, reference="tflite-micro")

    def unsupported_ops(self, model: ModelInfo) -> list[str]:
        """Each op without a lowering, with the first operator that uses it: 'TANH (operator 3)'."""
        from .graph import read_graph
        from .lower import LOWERINGS

        first: dict[str, int] = {}
        for operator in read_graph(model.path).operators:
            if operator.op not in LOWERINGS:
                first.setdefault(operator.op, operator.index)
        return [f"{op} (operator {index})" for op, index in sorted(first.items())]

    def compile(self, request: CompileRequest) -> CompileResult:
        model, target = request.model, request.target
        if target.os != "none":
            raise BadInput(f"backend kernels builds firmware for microcontrollers; {target.name} runs {target.os}.")
        tools = find_tools(target)
        request.progress(f"compiling {model.path.name} into static calls of edgeyard's int8 kernels")
        sources = generate_sources(request)
        return build_firmware(request, self.name, sources, tools)

    def versions(self) -> dict[str, str]:
        """The C compiler of every target this backend serves: the kernels are compiled by it."""
        return cross.compiler_versions(frozenset(f"{target.cross_prefix}gcc" for target in loadable_targets()
                                                 if self.name in target.backends))

    def tools(self, target: Target) -> list[Tool]:
        return firmware_tools(target)


def generate_sources(request: CompileRequest) -> ModelSources:
    """Lower and plan the model; write the driver, header, weights, kernels and harness into src/."""
    from .graph import read_graph
    from .lower import Constant, lower
    from .planner import plan_memory

    model = request.model
    graph = read_graph(model.path)
    stored = [tuple(graph.tensors[i].shape) for i in graph.inputs]
    if stored != [tuple(t.shape) for t in model.inputs]:
        raise BadInput(f"{model.path.name}: backend kernels compiles the input shapes stored in the model "
                       f"({stored}); --input-shape cannot change them.")
    layers = lower(graph)
    plan, copies = plan_memory(graph, layers)
    constants: list[Constant] = [c for layer in layers for c in layer.constants]
    tensors = {}
    for index, storage in plan.storage.items():
        tensors[index] = {"base": storage.base, "index": storage.index, "offset": storage.offset,
                          "symbol": f"t{index}_data"}
        if storage.base == "constant" and any(index in layer.inputs for layer in layers):
            data = graph.tensors[index].data
            if data.dtype.name not in C_TYPES:
                raise BadInput(f"{model.path.name}: constant tensor '{graph.tensors[index].name}' is "
                               f"{data.dtype.name}; the kernels take int8, int32 or float32 constants.")
            constants.append(Constant(f"t{index}_data", np.ascontiguousarray(data).tobytes(),
                                      C_TYPES[data.dtype.name], data.size))
    calls = []
    for position, layer in enumerate(layers):
        if layer.kernel is None and position not in copies:
            continue  # an alias: the planner gave input and output one storage
        pointers = [arg.value for arg in layer.args if arg.kind == "tensors"]
        call = {**vars(layer), "scratch_offset": plan.scratch.get(position, 0),
                "pointer_list": pointers[0] if pointers else None}
        if layer.kernel is None:
            call.update(kernel="memcpy", bytes=graph.tensors[layer.outputs[0]].nbytes)
        calls.append(call)

    name = model_identifier(model.stem)
    src = request.bundle_dir.absolute() / SOURCES
    src.mkdir()
    for source in sorted(KERNELS_DIR.iterdir()):
        if source.suffix in (".c", ".h"):
            shutil.copyfile(source, src / source.name)
    blob, offset, weights = f"{name}_weights.bin", 0, []
    with open(src / blob, "wb") as out:
        for constant in constants:
            padding = -offset % CONSTANT_ALIGNMENT
            out.write(b"\0" * padding)
            offset += padding
            weights.append({"symbol": constant.symbol, "bytes": len(constant.data), "offset": offset})
            out.write(constant.data)
            offset += len(constant.data)
    inputs, input_bytes = io_tensors(model.inputs, ALIGNMENT)
    outputs, output_bytes = io_tensors(model.outputs, ALIGNMENT)
    common = {"name": name, "NAME": name.upper(), "model_file": model.path.name, "target": request.target.name,
              "alignment": ALIGNMENT, "compiler": "edgeyard's int8 kernels"}
    arena_bytes = max(plan.arena_bytes, ALIGNMENT)  # a C array cannot be empty
    context = {**common, "inputs": inputs, "outputs": outputs, "input_bytes": input_bytes,
               "output_bytes": output_bytes, "weights_bytes": sum(len(c.data) for c in constants),
               "activations_bytes": plan.arena_bytes, "arena_bytes": arena_bytes, "working_bytes": arena_bytes}
    render("static_model.h.j2", src / f"{name}.h", **context, layer_count=len(calls))
    render("kernels_model.c.j2", src / f"{name}.c", **common, constants=constants, layers=layers, calls=calls,
           tensors=tensors)
    render("static_weights.S.j2", src / f"{name}_weights.S", **common, constants=weights, blob=blob)
    render("firmware_harness.c.j2", src / "harness.c", **common, inputs=inputs, outputs=outputs)

    def compile_objects(work: Path, gcc: Path, cpu_flags: list[str]) -> list[Path]:
        flags = [*cpu_flags, *cross.c_flags(src, work), "-O3", f"-I{src}"]
        objects = []
        for source in [src / f"{name}.c", *sorted(src.glob("ek_*.c"))]:
            objects.append(work / f"{source.stem}.o")
            cross.run_tool([gcc, *flags, "-c", source, "-o", objects[-1]], cwd=work)
        # The weights' .incbin names the blob relative to src/.
        cross.run_tool([gcc, *cpu_flags, "-c", f"{name}_weights.S", "-o", work / "weights.o"], cwd=src)
        return [*objects, work / "weights.o"]

    layer_table = [{"layer": position, "operator": call["index"], "op": call["op"], "name": call["name"],
                    "macs": call["macs"]} for position, call in enumerate(calls)]
    arena = [{"tensor": b.label, "offset": b.offset, "bytes": b.size, "first_layer": b.first, "last_layer": b.last}
             for b in plan.buffers]
    return ModelSources(name, src, context, compile_objects,
                        {"kernels": "edgeyard int8 kernels", "layers": layer_table, "arena": arena})


register(KernelsBackend())
