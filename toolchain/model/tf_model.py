"""Keras (.keras/.h5) and SavedModel ingest: the TensorFlow side of toolchain.model.

Both formats become one thing the rest of the project uses: a TensorFlow concrete function with the
inputs pinned to static shapes, taking the inputs positionally and returning the outputs as a list
in ModelInfo order. Reference runs and conversions to TFLite and ONNX start from it.
"""

import functools
from collections import Counter
from dataclasses import dataclass
from math import prod
from pathlib import Path

from ..errors import BadInput, reason
from .info import ModelInfo, TensorInfo
from .pinning import DeclaredInput, check_input_names, pin_shape, pinned_or_unresolved, pinning_repairs

# What load_savedmodel does to every SavedModel, listed among the model's repairs.
SAVEDMODEL_LOADER = ("serving signature read with the TF1 SavedModel loader (the TF2 loader rejects some, "
                     "e.g. stale optimizer slots) and its variables frozen into constants")
# Graph plumbing that says nothing about what the model computes.
PLUMBING_OPS = {"Const", "Identity", "IdentityN", "NoOp", "Placeholder"}


def _pinned_inputs(path: Path, names: list[str], declared: list, dtypes: list[str],
                   input_shapes: dict[str, tuple[int, ...]]) -> list[TensorInfo]:
    """The inputs at static shapes: --input-shape where given, else the declared shape with batch pinned."""
    check_input_names(path, input_shapes, names)
    with pinned_or_unresolved(path, [DeclaredInput(*i) for i in zip(names, declared, dtypes)], input_shapes):
        return [TensorInfo(name, pin_shape(path, name, dims, input_shapes.get(name)), dtype)
                for name, dims, dtype in zip(names, declared, dtypes)]


def read_keras(path: Path, sha256: str, input_shapes: dict[str, tuple[int, ...]]) -> ModelInfo:
    model = load_keras(str(path), sha256)
    declared = [list(t.shape) for t in model.inputs]
    inputs = _pinned_inputs(path, [t.name for t in model.inputs], declared,
                            [_dtype_name(t.dtype) for t in model.inputs], input_shapes)
    graph = _graph_summary(concrete_function(path, "keras", sha256, tuple(inputs)))
    return ModelInfo(
        path=path,
        format="keras",
        sha256=sha256,
        inputs=inputs,
        outputs=_output_infos(_keras_output_names(model), graph.outputs),
        ops=dict(Counter(_layer_classes(model))),
        params=int(model.count_params()),
        macs=graph.macs,
        repairs=pinning_repairs(declared, inputs, input_shapes),
    )


def read_savedmodel(path: Path, sha256: str, input_shapes: dict[str, tuple[int, ...]]) -> ModelInfo:
    saved = load_savedmodel(str(path), sha256)
    inputs = _pinned_inputs(path, saved.input_keys, saved.input_dims, saved.input_dtypes, input_shapes)
    graph = _graph_summary(concrete_function(path, "savedmodel", sha256, tuple(inputs)))
    return ModelInfo(
        path=path,
        format="savedmodel",
        sha256=sha256,
        inputs=inputs,
        outputs=_output_infos(saved.output_keys, graph.outputs),
        ops=graph.ops,
        params=graph.weights,
        macs=graph.macs,
        repairs=[SAVEDMODEL_LOADER, *pinning_repairs(saved.input_dims, inputs, input_shapes)],
    )


@functools.lru_cache(maxsize=4)
def load_keras(path: str, sha256: str):
    """The Keras model, loaded once per file content (`sha256` is part of the cache key)."""
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises many unrelated types for unreadable or foreign files
        raise BadInput(f"{path} cannot be loaded as a Keras model ({reason(err)}).") from None


@dataclass(frozen=True)
class FrozenSignature:
    """A SavedModel's serving signature with its variables folded into constants."""

    graph_def: object  # tf.compat.v1.GraphDef
    input_keys: list[str]  # signature keys, sorted (the order TensorFlow flattens a signature in)
    input_tensors: list[str]  # graph tensor names behind those keys
    input_dims: list[list[int | None] | None]
    input_dtypes: list[str]
    output_keys: list[str]
    output_tensors: list[str]


@functools.lru_cache(maxsize=4)
def load_savedmodel(path: str, sha256: str) -> FrozenSignature:
    """Load the serving signature through the TF1 loader and freeze it.

    The TF1 loader reads SavedModels written by TF2 as well, including ones the TF2 loader rejects,
    such as the MLPerf Tiny KWS model whose saved optimizer state no longer restores.
    """
    import tensorflow as tf

    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], path)
        except Exception as err:  # TensorFlow raises many types for unreadable SavedModels
            raise BadInput(f"{path} cannot be loaded as a SavedModel ({reason(err)}).") from None
        signature = _serving_signature(path, meta_graph.signature_def)
        input_keys, output_keys = sorted(signature.inputs), sorted(signature.outputs)
        output_tensors = [signature.outputs[k].name for k in output_keys]
        graph_def = tf.compat.v1.graph_util.convert_variables_to_constants(
            session, session.graph.as_graph_def(), sorted({name.split(":")[0] for name in output_tensors})
        )
    return FrozenSignature(
        graph_def=graph_def,
        input_keys=input_keys,
        input_tensors=[signature.inputs[k].name for k in input_keys],
        input_dims=[_signature_dims(signature.inputs[k]) for k in input_keys],
        input_dtypes=[tf.as_dtype(signature.inputs[k].dtype).name for k in input_keys],
        output_keys=output_keys,
        output_tensors=output_tensors,
    )


@functools.lru_cache(maxsize=8)
def concrete_function(path: Path, fmt: str, sha256: str, inputs: tuple[TensorInfo, ...]):
    """The model as a tf ConcreteFunction over static input shapes: f(*inputs) -> [outputs]."""
    import tensorflow as tf

    specs = [tf.TensorSpec(t.shape, tf.as_dtype(t.dtype), name=t.name) for t in inputs]
    if fmt == "keras":
        model = load_keras(str(path), sha256)

        def call(*tensors):
            result = model(tensors[0] if len(tensors) == 1 else list(tensors), training=False)
            return list(result) if isinstance(result, (list, tuple)) else [result]

        return tf.function(call).get_concrete_function(*specs)
    saved = load_savedmodel(str(path), sha256)
    placeholders = []

    def import_graph():
        placeholders.extend(tf.compat.v1.placeholder(s.dtype, s.shape, name=s.name) for s in specs)
        tf.graph_util.import_graph_def(
            saved.graph_def, input_map=dict(zip(saved.input_tensors, placeholders)), name="model"
        )

    # The public TF2 route from a frozen GraphDef to a callable function: wrap it, then prune to inputs -> outputs.
    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    fetches = [wrapped.graph.get_tensor_by_name(f"model/{name}") for name in saved.output_tensors]
    return wrapped.prune(placeholders, fetches)


def _serving_signature(path: str, signatures):
    if "serving_default" in signatures:
        return signatures["serving_default"]
    callable_keys = [k for k, s in signatures.items() if s.inputs and s.outputs]
    if len(callable_keys) != 1:
        raise BadInput(
            f"{path} has no serving_default signature and {len(callable_keys)} others; "
            "export it with exactly one serving signature."
        )
    return signatures[callable_keys[0]]


def _signature_dims(tensor_info) -> list[int | None] | None:
    if tensor_info.tensor_shape.unknown_rank:
        return None
    return [None if d.size < 0 else int(d.size) for d in tensor_info.tensor_shape.dim]


def _dtype_name(dtype) -> str:
    import tensorflow as tf

    return tf.as_dtype(dtype).name


def _output_infos(names: list[str], tensors) -> list[TensorInfo]:
    return [TensorInfo(name, tuple(t.shape.as_list()), t.dtype.name) for name, t in zip(names, tensors)]


def _keras_output_names(model) -> list[str]:
    """Functional models name outputs after the layers that produce them; a Sequential has one, its last layer."""
    import keras

    return [model.layers[-1].name] if isinstance(model, keras.Sequential) else list(model.output_names)


def _layer_classes(model):
    """Layer class names, looking inside nested models (a model used as a layer)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layer_classes(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield type(layer).__name__


@dataclass
class GraphSummary:
    ops: dict[str, int]
    weights: int  # elements of floating-point constants once variables are frozen (not shapes or indices)
    macs: int
    outputs: list  # output tensors, with static shapes


def _graph_summary(function) -> GraphSummary:
    """What the function's graph computes, read after freezing it: that inlines nested function calls,
    so every op is visible with its static shapes."""
    # Private module, but the only TF2 freezer; tf2onnx relies on it too.
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(function)
    operations = frozen.graph.get_operations()
    computing = [op for op in operations if op.type not in PLUMBING_OPS]
    return GraphSummary(
        ops=dict(Counter(op.type for op in computing)),
        weights=sum(
            op.outputs[0].shape.num_elements() or 0
            for op in operations
            if op.type == "Const" and op.outputs[0].dtype.is_floating
        ),
        macs=sum(_tf_op_macs(op) for op in computing),
        outputs=frozen.outputs,
    )


def _tf_op_macs(op) -> int:
    """Multiply-accumulates of one TensorFlow op from its static shapes (TensorFlow weight layouts)."""
    shapes = [t.shape.as_list() if t.shape.is_fully_defined() else None for t in op.inputs]
    result = op.outputs[0].shape.as_list() if op.outputs and op.outputs[0].shape.is_fully_defined() else None
    if result is None or len(shapes) < 2:
        return 0
    if op.type in ("Conv2D", "Conv3D") and shapes[1] is not None:  # filter [*kernel, in_c / groups, out_c]
        return prod(result) * prod(shapes[1][:-1])
    if op.type == "DepthwiseConv2dNative" and shapes[1] is not None:  # filter [kh, kw, in_c, multiplier]
        return prod(result) * shapes[1][0] * shapes[1][1]
    if op.type == "MatMul" and shapes[0] is not None:
        return prod(result) * shapes[0][0 if op.get_attr("transpose_a") else 1]
    if op.type in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3") and shapes[0] is not None:
        return prod(result) * shapes[0][-2 if op.get_attr("adj_x") else -1]
    if op.type == "Conv2DBackpropInput" and len(shapes) > 2 and shapes[1] is not None and shapes[2] is not None:
        # operands: output sizes, filter [kh, kw, out_c, in_c], input; each input element feeds kh*kw*out_c outputs
        return prod(shapes[2]) * prod(shapes[1][:-1])
    return 0
