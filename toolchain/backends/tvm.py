"""Apache TVM (Relax): the model becomes a shared library plus a small C++ runner on the TVM runtime.

The bundle (toolchain/bundle.py protocol):
    runner      C++ program from templates/tvm_runner.cpp.j2, linked with rpath $ORIGIN/lib
    model.so    the compiled model (Relax VM executable and its kernels)
    lib/        libtvm_runtime.so and libtvm_ffi.so for the target's architecture
    runner.cpp  the runner's source, for reference
    run.sh, manifest.json
A target with tvm_runtime = "none" (every microcontroller; Linux boards with no TVM runtime built for
them) gets TVM's kernels behind a static C driver instead: tvm_static.py, then tvm_micro.py for
firmware or tvm_static_linux.py for a Linux executable. CUDA targets: tvm_cuda.py.
tvm is imported only inside the functions that need it: importing it takes over a second.
"""

import math
import shutil
from functools import lru_cache
from pathlib import Path

from .. import bundle, cross, runtimes
from ..codegen import c_identifier, render
from ..errors import BadInput, BuildError
from ..model.info import ModelInfo, TensorInfo
from ..targets import all_targets
from . import register
from .base import CompileRequest

MODEL_LIBRARY = "model.so"
RUNNER = "runner"

# numpy dtype name -> (DLPack type code, bits): the tensor dtypes the runner can pass.
_DL_TYPES = {
    "float16": ("kDLFloat", 16),
    "float32": ("kDLFloat", 32),
    "float64": ("kDLFloat", 64),
    "int8": ("kDLInt", 8),
    "int16": ("kDLInt", 16),
    "int32": ("kDLInt", 32),
    "int64": ("kDLInt", 64),
    "uint8": ("kDLUInt", 8),
}


def _tflite_unsupported_ops(path: Path) -> list[str]:
    """What the Relax TFLite frontend rejects, by its own converter map and quantization rules."""
    import tflite
    from tvm import relax
    from tvm.relax.frontend.tflite.tflite_frontend import ExprTable, OperatorConverter

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    unsupported = set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        converter = OperatorConverter(model, subgraph, ExprTable(), relax.BlockBuilder())
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            try:
                name = converter.get_op_code_str(op)
            except NotImplementedError:  # a custom op, or a builtin newer than the frontend's schema
                code = model.OperatorCodes(op.OpcodeIndex())
                custom = code.CustomCode()
                name = f"CUSTOM({custom.decode()})" if custom else f"builtin code {code.BuiltinCode()}"
                unsupported.add(name)
                continue
            if name not in converter.convert_map:
                unsupported.add(name)
                continue
            # The frontend's own rules (OperatorConverter.check_unsupported_ops): quantized weights
            # with float data in and out is dynamic-range quantization, which it cannot import; an
            # op touching any quantized tensor must be on its list of quantized ops.
            inputs_quantized = [t.qnn_params is not None for t in converter.get_input_tensors(op)]
            data_quantized, weights_quantized = any(inputs_quantized[:1]), any(inputs_quantized[1:])
            output_quantized = any(t.qnn_params is not None for t in converter.get_output_tensors(op))
            if weights_quantized and not (data_quantized or output_quantized):
                unsupported.add(f"{name} (dynamic-range quantized)")
            elif (data_quantized or weights_quantized or output_quantized) and name not in OperatorConverter._SUPPORTED_QUANTIZED_OPS:
                unsupported.add(f"{name} (quantized)")
    return sorted(unsupported)


def _onnx_unsupported_ops(path: Path) -> list[str]:
    import onnx
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    # Ops the importer handles itself rather than through its convert map (ONNXGraphImporter).
    handled = set(_get_convert_map()) | {"Constant", "If"}
    unsupported = set()
    graphs = [onnx.load(str(path), load_external_data=False).graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.op_type not in handled:
                unsupported.add(node.op_type)
            for attribute in node.attribute:  # bodies of If, Loop, Scan
                graphs.extend([attribute.g] if attribute.HasField("g") else [])
                graphs.extend(attribute.graphs)
    return sorted(unsupported)


def _import(model: ModelInfo):
    """The model as a Relax IRModule, weights bound as constants, inputs pinned to ModelInfo's shapes."""
    shape_dict = {t.name: list(t.shape) for t in model.inputs}
    dtype_dict = {t.name: t.dtype for t in model.inputs}
    if model.format == "tflite":
        import tflite
        from tvm.relax.frontend.tflite import from_tflite

        from .tvm_tflite_import import int8_operator_converter

        tflite_model = tflite.Model.GetRootAsModel(model.path.read_bytes(), 0)
        return from_tflite(tflite_model, shape_dict=shape_dict, dtype_dict=dtype_dict, op_converter=int8_operator_converter())
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    return from_onnx(onnx.load(str(model.path)), shape_dict=shape_dict, dtype_dict=dtype_dict)


def _static_signature(tensor_type) -> tuple[tuple[int, ...] | None, str]:
    """(shape, dtype) of a Relax tensor type; shape None when some dimension is not a constant."""
    from tvm import tirx

    dims = tensor_type.shape.values if tensor_type.shape is not None else None
    if dims is None or not all(isinstance(d, tirx.IntImm) for d in dims):
        return None, tensor_type.dtype
    return tuple(int(d) for d in dims), tensor_type.dtype


def _check_signature(ir_module, model: ModelInfo) -> None:
    """The imported main must take and return exactly the tensors the runner is rendered for."""
    from tvm import relax

    main = ir_module["main"]
    results = list(main.ret_ty.fields) if isinstance(main.ret_ty, relax.TupleType) else [main.ret_ty]
    for role, tensors, types in (
        ("inputs", model.inputs, [p.ty for p in main.params]),
        ("outputs", model.outputs, results),
    ):
        if len(types) != len(tensors):
            raise BuildError(f"TVM imported {len(types)} {role} from {model.path.name} but the model lists {len(tensors)}.")
        for tensor, tensor_type in zip(tensors, types):
            if not isinstance(tensor_type, relax.TensorType):
                raise BuildError(f"TVM imported {role[:-1]} '{tensor.name}' of {model.path.name} as a {type(tensor_type).__name__}, not a tensor.")
            shape, dtype = _static_signature(tensor_type)
            if (shape, dtype) != (tuple(tensor.shape), tensor.dtype):
                shown = "a dynamic shape" if shape is None else f"shape {list(shape)}"
                raise BuildError(
                    f"TVM imported {role[:-1]} '{tensor.name}' of {model.path.name} with {shown} and dtype {dtype}, "
                    f"but the model lists shape {list(tensor.shape)} and dtype {tensor.dtype}."
                )


def imported_module(model: ModelInfo, progress):
    """The model as a checked Relax IRModule; an import failure is one BuildError naming the model."""
    progress(f"importing {model.path.name} into TVM Relax")
    try:
        ir_module = _import(model)
    except Exception as err:  # TVM's frontends raise anything from OpNotImplemented to AssertionError
        raise BuildError(f"backend tvm cannot import {model.path.name}: {_first_line(err)}") from err
    _check_signature(ir_module, model)
    return ir_module


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _runner_tensors(tensors: list[TensorInfo]) -> list[dict]:
    """What the runner template needs of each tensor; names become C identifiers."""
    taken: set[str] = set()
    rendered = []
    for tensor in tensors:
        if tensor.dtype not in _DL_TYPES:
            raise BadInput(f"backend tvm cannot pass tensor '{tensor.name}' of dtype {tensor.dtype} (supported: {', '.join(_DL_TYPES)}).")
        dl_code, bits = _DL_TYPES[tensor.dtype]
        rendered.append({
            "ident": c_identifier(tensor.name, taken),
            "shape": list(tensor.shape),
            "dl_code": dl_code,
            "bits": bits,
            "bytes": math.prod(tensor.shape) * bits // 8,
        })  # fmt: skip
    return rendered


def _compile_runner(request: CompileRequest, gxx: Path, runtime_dir: Path, device: str = "cpu") -> None:
    bundle_dir, model, target = request.bundle_dir, request.model, request.target
    render(
        "tvm_runner.cpp.j2",
        bundle_dir / "runner.cpp",
        model_name=c_identifier(model.stem),
        target=target.name,
        inputs=_runner_tensors(model.inputs),
        outputs=_runner_tensors(model.outputs),
        device=device,
    )
    lib_dir = bundle_dir / "lib"
    lib_dir.mkdir(exist_ok=True)
    for library in ("libtvm_runtime.so", "libtvm_ffi.so"):
        shutil.copy(runtime_dir / library, lib_dir / library)  # follows the host runtime's symlinks
    request.progress(f"compiling the C++ runner with {gxx.name}")
    includes = [f"-I{d}" for d in runtimes.tvm_ffi_include_dirs()]
    cross.run_tool(
        [
            gxx, "-std=c++17", "-O2", *includes, "runner.cpp", "-o", RUNNER,
            "-Llib",
            # model.so calls into libtvm_runtime without naming it: keep it linked though no runner symbol needs it.
            "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi",
            "-Wl,-rpath,$ORIGIN/lib",
        ],
        cwd=bundle_dir,
    )  # fmt: skip


class TvmBackend:
    name = "tvm"
    formats = ("tflite", "onnx")
    target_os = ("linux", "none")
    description = "Apache TVM (Relax, default pipeline with fusion): model.so and a C++ runner on the TVM runtime"

    def unsupported_ops(self, model: ModelInfo) -> list[str]:
        if model.format == "tflite":
            return _tflite_unsupported_ops(model.path)
        if model.format == "onnx":
            return _onnx_unsupported_ops(model.path)
        raise BadInput(f"backend tvm compiles {' or '.join(self.formats)} models, not {model.format}.")

    def compile(self, request: CompileRequest) -> dict:
        model, target, bundle_dir = request.model, request.target, request.bundle_dir
        if model.format not in self.formats:
            raise BadInput(f"backend tvm compiles {' or '.join(self.formats)} models, not {model.format}.")
        if target.tvm_runtime == "none":  # TVM's kernels behind a static C driver (tvm_static.py)
            if target.os == "none":  # in harness firmware
                from .tvm_micro import compile_for_microcontroller

                return compile_for_microcontroller(request)
            from .tvm_static_linux import compile_linux_executable  # in one Linux executable

            return compile_linux_executable(request)
        if target.tvm_target["kind"] == "cuda":  # NVIDIA GPUs: device code built with the CUDA toolkit
            from .tvm_cuda import compile_for_gpu

            return compile_for_gpu(request)
        # Find the tools before the slow steps, so a missing one fails at once.
        gxx = cross.find_tool(target, "g++")
        runtime_dir = runtimes.tvm_runtime_dir(target.arch)

        ir_module = imported_module(model, request.progress)
        import tvm
        import tvm.support.cc
        from tvm import relax

        request.progress(f"compiling {model.path.name} with TVM for {target.name}")
        tvm_target = tvm.target.Target(target.tvm_target)
        try:
            executable = tvm.compile(ir_module, target=tvm_target, relax_pipeline=relax.get_default_pipeline(tvm_target))
        except Exception as err:
            raise BuildError(f"TVM could not compile {model.path.name} for {target.name}: {_first_line(err)}") from err
        request.progress(f"linking {MODEL_LIBRARY} with {gxx.name}")
        try:
            executable.export_library(str(bundle_dir / MODEL_LIBRARY), fcompile=tvm.support.cc.cross_compiler(str(gxx)))
        except RuntimeError as err:  # the compiler's output is in the message
            raise BuildError(f"linking {MODEL_LIBRARY} with {gxx.name} failed: {str(err).strip()}") from err

        _compile_runner(request, gxx, runtime_dir)
        entry = bundle.Entry(kind="native", argv=[f"./{RUNNER}"], arch=target.arch)
        bundle.write_run_script(bundle_dir, self.name, target.name, entry)
        return bundle.write_manifest(
            bundle_dir, self.name, target.name, entry, model.inputs, model.outputs, extra={"tvm_target": target.tvm_target}
        )

    def versions(self) -> dict[str, str]:
        versions = {**runtimes.installed_versions(), **_compiler_versions()}
        if any("tvm" in t.backends and t.tvm_target.get("kind") == "cuda" for t in all_targets()):
            from .tvm_cuda import toolkit_version  # the device code is the CUDA toolkit's

            versions["cuda-toolkit"] = toolkit_version()
        return versions


@lru_cache(maxsize=1)
def _compiler_versions() -> dict[str, str]:
    """Versions of the installed compiler of every target this backend serves (versions() has no target)."""
    compilers = {}
    for target in all_targets():
        if "tvm" in target.backends:
            name = f"{target.cross_prefix}{'gcc' if target.tvm_runtime == 'none' else 'g++'}"
            path = shutil.which(name)
            compilers[name] = cross.tool_version(path) if path else "not installed"
    return compilers


register(TvmBackend())
