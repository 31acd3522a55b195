"""The tvm backend's front end, shared by every route: which ops TVM cannot import, the import of a
TFLite, ONNX or torch.export model into a checked Relax IRModule, and the tensor types the generated C can pass.

It imports no route (tvm/__init__.py dispatches to them). tvm is imported inside the functions:
importing it takes over a second.
"""

from pathlib import Path

from ...errors import BadInput, BuildError, reason
from ...hostenv import host_cpu
from ...model.info import ModelInfo
from ...target.profile import Target

# numpy dtype name -> (DLPack type code, bits): the tensor dtypes the runner can pass.
DL_TYPES = {
    "float16": ("kDLFloat", 16),
    "float32": ("kDLFloat", 32),
    "float64": ("kDLFloat", 64),
    "int8": ("kDLInt", 8),
    "int16": ("kDLInt", 16),
    "int32": ("kDLInt", 32),
    "int64": ("kDLInt", 64),
    "uint8": ("kDLUInt", 8),
}



def unsupported_ops(model: ModelInfo) -> list[str]:
    """Ops of a TFLite, ONNX or torch.export model that TVM's Relax frontends cannot import; [] when all are fine."""
    if model.format == "tflite":
        return _tflite_unsupported_ops(model.path)
    if model.format == "onnx":
        return _onnx_unsupported_ops(model.path)
    if model.format == "torch-export":
        return _exported_program_unsupported_ops(model)
    raise BadInput(f"backend tvm compiles tflite, onnx or torch-export models, not {model.format}.")


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


def _decomposed_program(model: ModelInfo):
    """The exported program in Core ATen ops, as from_exported_program imports it."""
    from ...model.torch_model import load_program

    return load_program(model.path, model.format).run_decompositions()


def _exported_program_unsupported_ops(model: ModelInfo) -> list[str]:
    """Core ATen ops (after PyTorch's decompositions) that the Relax importer has no converter for."""
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    known = ExportedProgramImporter().convert_map
    return sorted({f"aten.{node.target.__name__}" for node in _decomposed_program(model).graph.nodes
                   if node.op == "call_function" and node.target.__name__ not in known})


def _import(model: ModelInfo):
    """The model as a Relax IRModule, weights bound as constants, inputs pinned to ModelInfo's shapes."""
    shape_dict = {t.name: list(t.shape) for t in model.inputs}
    dtype_dict = {t.name: t.dtype for t in model.inputs}
    if model.format == "tflite":
        import tflite
        from tvm.relax.frontend.tflite import from_tflite

        from .int8_import import Int8OperatorConverter

        tflite_model = tflite.Model.GetRootAsModel(model.path.read_bytes(), 0)
        return from_tflite(tflite_model, shape_dict=shape_dict, dtype_dict=dtype_dict, op_converter=Int8OperatorConverter)
    if model.format == "torch-export":
        from tvm.relax.frontend.torch import from_exported_program

        # Decomposed already; a one-output program returns its tensor, not a 1-tuple, as the runner expects.
        return from_exported_program(_decomposed_program(model), run_ep_decomposition=False,
                                     unwrap_unit_return_tuple=True)
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    return from_onnx(onnx.load(str(model.path)), shape_dict=shape_dict, dtype_dict=dtype_dict)


def static_signature(tensor_type) -> tuple[tuple[int, ...] | None, str]:
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
            shape, dtype = static_signature(tensor_type)
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
        raise BuildError(f"backend tvm cannot import {model.path.name}: {reason(err)}") from err
    _check_signature(ir_module, model)
    return ir_module


def tvm_target_of(target: Target, settings: dict | None = None):
    """tvm.target.Target for the profile's tvm_target (or `settings` in its place; mcpu "host": this machine's CPU,
    hostenv/host_cpu.py), refused with the profile
    named when TVM does not take it or LLVM does not know its CPU (LLVM would quietly tune for a generic one)."""
    import tvm
    from tvm.target import codegen

    settings = host_cpu.resolved(target.tvm_target if settings is None else settings)
    try:
        tvm_target = tvm.target.Target(settings)
    except (ValueError, tvm.TVMError) as err:
        raise BadInput(f"{target.path}: TVM does not take tvm_target {settings}: {reason(err)}.") from None
    for llvm in (tvm_target, tvm_target.host):
        if llvm is None or llvm.kind.name != "llvm" or "mcpu" not in llvm.attrs:
            continue
        triple = str(llvm.attrs.get("mtriple", "")) or codegen.llvm_get_system_triple()
        if not codegen.llvm_is_valid_cpu(str(llvm.attrs["mcpu"]), triple):
            raise BadInput(f"{target.path}: LLVM does not know the CPU tvm_target.mcpu = '{llvm.attrs['mcpu']}' "
                           f"for {triple}.")
    return tvm_target
