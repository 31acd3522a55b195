"""Read a .tflite flatbuffer with the `tflite` package, without importing TensorFlow."""

import struct
from collections import Counter
from math import prod
from pathlib import Path

import tflite

from ..errors import BadInput, reason
from .info import ModelInfo, Node, TensorInfo
from .pinning import DeclaredInput, check_input_names, pin_shape, pinned_or_unresolved, pinning_repairs

OP_NAMES = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
# TensorType names are numpy dtype names once lower-cased (FLOAT32 -> float32); RESOURCE, STRING etc. stay labels.
DTYPE_NAMES = {code: name.lower() for name, code in vars(tflite.TensorType).items() if not name.startswith("_")}


def read_tflite(path: Path, sha256: str, input_shapes: dict[str, tuple[int, ...]]) -> ModelInfo:
    buf = path.read_bytes()
    if not tflite.Model.ModelBufferHasIdentifier(buf, 0):
        raise BadInput(f"{path} is not a TFLite model (it lacks the TFL3 flatbuffer identifier).")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
        input_indices = [graph.Inputs(i) for i in range(graph.InputsLength())]
        output_indices = [graph.Outputs(i) for i in range(graph.OutputsLength())]
        names = [_tensor_name(graph, i) for i in input_indices]
        check_input_names(path, input_shapes, names)
        declared = [_declared_dims(graph.Tensors(i)) for i in input_indices]
        dtypes = [_dtype_name(graph.Tensors(i)) for i in input_indices]
        with pinned_or_unresolved(path, [DeclaredInput(*i) for i in zip(names, declared, dtypes)], input_shapes):
            inputs = [
                _tensor_info(graph, i, pin_shape(path, name, dims, input_shapes.get(name)))
                for i, name, dims in zip(input_indices, names, declared)
            ]
            shapes = _stored_shapes(graph)
            if any(t.shape != shapes[i] for t, i in zip(inputs, input_indices)):
                shapes = _propagated_shapes(path, inputs)
        outputs = [_tensor_info(graph, i, shapes[i]) for i in output_indices]
        ops, macs = _ops_and_macs(model, shapes)
        nodes = _nodes(model, graph, shapes)
        params = _constant_elements(model)
    except (struct.error, IndexError, KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        # The flatbuffer accessors fail this way on truncated or damaged files.
        raise BadInput(f"{path} is a damaged TFLite model ({reason(err)}).") from None
    return ModelInfo(
        path=path, format="tflite", sha256=sha256, inputs=inputs, outputs=outputs, ops=ops, params=params, macs=macs,
        repairs=pinning_repairs(declared, inputs, input_shapes), nodes=nodes,
    )


def _nodes(model, graph, shapes: dict[int, tuple[int, ...]]) -> list[Node]:
    """The main subgraph's operators; constant operands (weights) are left out of `inputs`."""
    constant = {i for i in range(graph.TensorsLength()) if model.Buffers(graph.Tensors(i).Buffer()).DataLength()}
    nodes = []
    for o in range(graph.OperatorsLength()):
        operator = graph.Operators(o)
        name = op_name(model, operator)
        reads = [operator.Inputs(i) for i in range(operator.InputsLength())]
        writes = [operator.Outputs(i) for i in range(operator.OutputsLength())]
        nodes.append(Node(name, tuple(_tensor_name(graph, i) for i in reads if i >= 0 and i not in constant),
                          tuple(_tensor_name(graph, i) for i in writes),
                          shapes.get(writes[0]) if writes else None, _op_macs(name, operator, shapes)))
    return nodes


def _tensor_name(graph, index: int) -> str:
    return graph.Tensors(index).Name().decode("utf-8", "replace")


def _shape(tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()


def _declared_dims(tensor) -> list[int | None]:
    """The input's shape with dynamic dims as None: shape_signature holds -1 where the stored shape holds 1."""
    if tensor.ShapeSignatureLength():
        return [None if d < 0 else int(d) for d in tensor.ShapeSignatureAsNumpy()]
    return list(_shape(tensor))


def _tensor_info(graph, index: int, shape: tuple[int, ...]) -> TensorInfo:
    tensor = graph.Tensors(index)
    quant = tensor.Quantization()
    # Only a per-tensor (one scale) quantization describes how to feed or read the whole tensor.
    per_tensor = quant is not None and quant.ScaleLength() == 1 and quant.ZeroPointLength() == 1
    return TensorInfo(
        name=_tensor_name(graph, index),
        shape=shape,
        dtype=_dtype_name(tensor),
        quant=(float(quant.Scale(0)), int(quant.ZeroPoint(0))) if per_tensor else None,
    )


def _dtype_name(tensor) -> str:
    return DTYPE_NAMES.get(tensor.Type(), str(tensor.Type()))


def _stored_shapes(graph) -> dict[int, tuple[int, ...]]:
    return {i: _shape(graph.Tensors(i)) for i in range(graph.TensorsLength())}


def _propagated_shapes(path: Path, inputs: list[TensorInfo]) -> dict[int, tuple[int, ...]]:
    """Every tensor's shape after resizing the inputs: the flatbuffer stores them for batch 1 only.

    LiteRT propagates the new shapes; it runs once on zeros because tensors shaped by data computed
    in the graph (a RESHAPE to a SHAPE result) get their shape only when the graph runs.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the XNNPACK delegate: tensors inside a delegated partition keep their stale shapes.
    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    try:
        for detail, tensor in zip(interpreter.get_input_details(), inputs):
            interpreter.resize_tensor_input(detail["index"], list(tensor.shape), strict=True)
        interpreter.allocate_tensors()
        for detail, tensor in zip(interpreter.get_input_details(), inputs):
            interpreter.set_tensor(detail["index"], np.zeros(tensor.shape, dtype=detail["dtype"]))
        interpreter.invoke()
    except (ValueError, RuntimeError) as err:
        raise BadInput(
            f"{path} cannot run with input shapes {[list(t.shape) for t in inputs]} ({reason(err)})."
        ) from None
    return {d["index"]: tuple(int(x) for x in d["shape"]) for d in interpreter.get_tensor_details()}


def op_name(model, operator) -> str:
    code = model.OperatorCodes(operator.OpcodeIndex())
    # Codes above 127 live only in BuiltinCode; older files set only DeprecatedBuiltinCode.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == tflite.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{code.CustomCode().decode('utf-8', 'replace')}"
    return OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _ops_and_macs(model, main_shapes: dict[int, tuple[int, ...]]) -> tuple[dict[str, int], int]:
    ops: Counter[str] = Counter()
    macs = 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        shapes = main_shapes if g == 0 else _stored_shapes(graph)
        for o in range(graph.OperatorsLength()):
            operator = graph.Operators(o)
            name = op_name(model, operator)
            ops[name] += 1
            macs += _op_macs(name, operator, shapes)
    return dict(ops), macs


def _op_macs(name: str, operator, shapes: dict[int, tuple[int, ...]]) -> int:
    """Multiply-accumulates of one operator from its tensor shapes (TFLite weight layouts)."""
    # An optional operand is index -1, which has no shape.
    operands = [shapes.get(operator.Inputs(i)) for i in range(operator.InputsLength())]
    result = shapes.get(operator.Outputs(0)) if operator.OutputsLength() else None
    if result is None or len(operands) < 2 or operands[1] is None:
        return 0
    if name == "CONV_2D":  # filter [out_c, kh, kw, in_c / groups]
        return prod(result) * prod(operands[1][1:])
    if name == "CONV_3D":  # filter [kd, kh, kw, in_c, out_c]
        return prod(result) * prod(operands[1][:-1])
    if name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, out_c]
        return prod(result) * operands[1][1] * operands[1][2]
    if name == "FULLY_CONNECTED":  # weights [units, in]
        return prod(result) * operands[1][-1]
    if name == "BATCH_MATMUL" and operands[0] is not None:
        return prod(result) * operands[0][-2 if _adj_x(operator) else -1]
    if name == "TRANSPOSE_CONV" and len(operands) > 2 and operands[2] is not None:
        # operands: output shape, filter [out_c, kh, kw, in_c], input; each input element feeds kh*kw*out_c outputs
        return prod(operands[2]) * prod(operands[1][:-1])
    return 0


def _adj_x(operator) -> bool:
    table = operator.BuiltinOptions()
    if table is None:
        return False
    options = tflite.BatchMatMulOptions()
    options.Init(table.Bytes, table.Pos)
    return bool(options.AdjX())


def _constant_elements(model) -> int:
    """Elements of every tensor backed by data in a buffer (weights, biases, constant operands), each buffer once."""
    seen: set[int] = set()
    total = 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.TensorsLength()):
            tensor = graph.Tensors(i)
            buffer_index = tensor.Buffer()
            if buffer_index == 0 or buffer_index in seen or tensor.IsVariable():
                continue
            buffer = model.Buffers(buffer_index)
            # Models over 2 GB keep buffer data after the flatbuffer and record only its offset.
            if buffer.DataLength() or buffer.Offset() > 1:
                seen.add(buffer_index)
                total += prod(_shape(tensor))
    return total
