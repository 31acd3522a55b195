"""Read an .onnx model with the `onnx` package, without importing TensorFlow."""

from collections import Counter
from math import prod
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
from google.protobuf.message import DecodeError

from ..errors import BadInput, reason
from .info import ModelInfo, Node, TensorInfo
from .pinning import DeclaredInput, check_input_names, pin_shape, pinned_or_unresolved, pinning_repairs

# Operand index of the weight (convolutions) or left matrix (matmuls) whose shape sets the MAC count.
CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
MATMUL_LEFT = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0}


def read_onnx(path: Path, sha256: str, input_shapes: dict[str, tuple[int, ...]]) -> ModelInfo:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError, OSError) as err:
        raise BadInput(f"{path} is not a valid ONNX model ({reason(err)}).") from None
    try:
        return _model_info(path, sha256, model, input_shapes)
    except (KeyError, IndexError, ValueError, TypeError, OverflowError) as err:
        # What the checker lets through: initializers whose data does not fit their shape, names of
        # nothing, attributes of the wrong type.
        raise BadInput(f"{path} is a damaged ONNX model ({reason(err)}).") from None


def _model_info(path: Path, sha256: str, model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> ModelInfo:
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    # Older exporters list initializers among the inputs; they are weights, not inputs.
    graph_inputs = [v for v in graph.input if v.name not in weights]
    check_input_names(path, input_shapes, [v.name for v in graph_inputs])
    declared = [_declared_dims(v) for v in graph_inputs]
    with pinned_or_unresolved(path, [DeclaredInput(v.name, dims, _dtype(v)) for v, dims in zip(graph_inputs, declared)],
                              input_shapes):
        inputs = [
            TensorInfo(v.name, pin_shape(path, v.name, dims, input_shapes.get(v.name)), _dtype(v))
            for v, dims in zip(graph_inputs, declared)
        ]
        shapes = _inferred_shapes(path, model, inputs)
        if any(v.name not in shapes for v in graph.output):
            shapes.update(_run_for_output_shapes(path, inputs))
    steps = _dequantized_outputs(graph)
    outputs = [TensorInfo(v.name, shapes[v.name], _dtype(v), steps.get(v.name)) for v in graph.output]
    nodes = [Node(_op_name(node), tuple(name for name in node.input if name and name not in weights),
                  tuple(node.output), shapes.get(node.output[0]) if node.output else None, _node_macs(node, shapes))
             for node in graph.node]
    return ModelInfo(
        path=path,
        format="onnx",
        sha256=sha256,
        inputs=inputs,
        outputs=outputs,
        ops=dict(Counter(_op_name(node) for node in graph.node)),
        params=sum(prod(t.dims) for t in graph.initializer),
        macs=sum(node.macs for node in nodes),
        repairs=pinning_repairs(declared, inputs, input_shapes),
        nodes=nodes,
    )


def _dequantized_outputs(graph: onnx.GraphProto) -> dict[str, tuple[float, int]]:
    """Graph outputs that a DequantizeLinear with a constant per-tensor scale makes (QDQ models):
    name -> (scale, zero_point), the grid their float values lie on, so validation can allow one step."""
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    outputs = {v.name for v in graph.output}
    found = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.output[0] not in outputs:
            continue
        scale = constants.get(node.input[1])
        zero_point = constants.get(node.input[2]) if len(node.input) > 2 else np.zeros(())
        if scale is not None and zero_point is not None and scale.size == 1 and zero_point.size == 1:
            found[node.output[0]] = (float(scale.reshape(())), int(zero_point.reshape(())))
    return found


def _declared_dims(value: onnx.ValueInfoProto) -> list[int | None] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    # A symbolic (dim_param) or empty dim is dynamic.
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim]


def _dtype(value: onnx.ValueInfoProto) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name


def _op_name(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _inferred_shapes(path: Path, model: onnx.ModelProto, inputs: list[TensorInfo]) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor ONNX shape inference can resolve once the inputs are pinned."""
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    pinned_inputs = {v.name: v for v in pinned.graph.input}
    for tensor in inputs:
        shape = pinned_inputs[tensor.name].type.tensor_type.shape
        shape.ClearField("dim")
        for d in tensor.shape:
            shape.dim.add().dim_value = d
    try:
        inferred = onnx.shape_inference.infer_shapes(pinned, data_prop=True).graph
    except onnx.shape_inference.InferenceError as err:
        raise BadInput(
            f"{path} is inconsistent at input shapes {[list(t.shape) for t in inputs]} ({reason(err)})."
        ) from None
    shapes = {t.name: tuple(t.dims) for t in inferred.initializer}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = _declared_dims(value)
        if dims is not None and None not in dims:
            shapes[value.name] = tuple(dims)
    return shapes


def _run_for_output_shapes(path: Path, inputs: list[TensorInfo]) -> dict[str, tuple[int, ...]]:
    """Output shapes by running the model once on zeros: shape inference cannot resolve every graph."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {t.name: np.zeros(t.shape, dtype=t.dtype) for t in inputs}
        names = [o.name for o in session.get_outputs()]
        results = session.run(names, feeds)
    except Exception as err:  # ONNX Runtime raises its own exception types
        raise BadInput(
            f"{path} has output shapes that only running it can tell, and ONNX Runtime cannot ({reason(err)})."
        ) from None
    return {name: tuple(result.shape) for name, result in zip(names, results)}


def _node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of one node from its tensor shapes (ONNX weight layouts)."""
    operands = [shapes.get(name) for name in node.input]
    result = shapes.get(node.output[0]) if node.output else None
    if result is None:
        return 0
    if node.op_type in CONV_WEIGHT and operands[CONV_WEIGHT[node.op_type]] is not None:
        # weight [out_c, in_c / groups, *kernel]: covers depthwise (groups == in_c) too
        return prod(result) * prod(operands[CONV_WEIGHT[node.op_type]][1:])
    if node.op_type == "ConvTranspose" and operands[0] is not None and operands[1] is not None:
        # weight [in_c, out_c / groups, *kernel]: each input element feeds out_c/groups * kernel outputs
        return prod(operands[0]) * prod(operands[1][1:])
    if node.op_type in MATMUL_LEFT and operands[MATMUL_LEFT[node.op_type]] is not None:
        return prod(result) * operands[MATMUL_LEFT[node.op_type]][-1]
    if node.op_type == "Gemm" and operands[0] is not None:
        trans_a = any(a.name == "transA" and a.i for a in node.attribute)
        return prod(result) * operands[0][0 if trans_a else 1]
    return 0
