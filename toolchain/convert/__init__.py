"""Format conversion: Keras/SavedModel -> float32 TFLite, Keras/SavedModel/TFLite -> ONNX (tf2onnx), PyTorch -> ONNX
(torch.onnx.export: the dynamo exporter for a torch.export program, the TorchScript exporter for TorchScript),
Keras -> torch.export program (Keras 3 on PyTorch, keras_torch.py).

Converters write only into `out_dir`, atomically (a temporary name, then a rename), and give the same
bytes for the same model. Each returns load_model() of the file it wrote.
"""

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import BadInput, BuildError, reason
from ..model import TORCH_FORMATS, ModelInfo, TensorInfo, load_model

ONNX_OPSET = 17  # supported by tf2onnx 1.17, ONNX Runtime and TVM's ONNX frontend


def to_tflite(info: ModelInfo, out_dir: Path) -> ModelInfo:
    """A float32 .tflite with the inputs at the model's pinned (static) shapes; a .tflite passes through."""
    if info.format == "tflite":
        return info
    if info.format == "onnx":
        raise BadInput(f"cannot convert ONNX model {info.path} to TFLite; use --backend onnxruntime or tvm.")
    import tensorflow as tf

    from ..model.tf_model import concrete_function

    function = concrete_function(info.path, info.format, info.sha256, tuple(info.inputs))
    try:
        # A concrete function without its trackable object: the converter freezes the variables into constants.
        flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([function]).convert()
    except Exception as err:  # the converter raises many types (ConverterError, ValueError, ...)
        raise BuildError(f"converting {info.path} to TFLite failed: {reason(err)}.") from None
    target = Path(out_dir) / f"{info.stem}.tflite"
    with atomic_file(target) as temporary:
        temporary.write_bytes(flatbuffer)
    return _reload(target, info)


def to_onnx(info: ModelInfo, out_dir: Path) -> ModelInfo:
    """An .onnx (opset 17) converted with tf2onnx or torch.onnx.export; an .onnx passes through."""
    if info.format == "onnx":
        return info
    target = Path(out_dir) / f"{info.stem}.onnx"
    try:
        with atomic_file(target) as temporary:
            (_run_torch_onnx_export if info.format in TORCH_FORMATS else _run_tf2onnx)(info, temporary)
    except BuildError:
        raise
    except Exception as err:  # tf2onnx surfaces TensorFlow's and its own many error types
        raise BuildError(f"converting {info.path} to ONNX failed: {reason(err)}.") from None
    return _reload(target, info)


def to_torch_export(info: ModelInfo, out_dir: Path) -> ModelInfo:
    """A torch.export program (.pt2) of a Keras model at its pinned input shapes; a .pt2 passes through."""
    if info.format == "torch-export":
        return info
    if info.format != "keras":
        raise BadInput(f"cannot convert {info.format} model {info.path} to a torch.export program (only Keras models "
                       "convert); use another backend.")
    from .keras_torch import keras_to_torch_export

    target = Path(out_dir) / f"{info.stem}.pt2"
    keras_to_torch_export(info, target)
    return _reload(target, info)


def _run_tf2onnx(info: ModelInfo, output: Path) -> None:
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    from .onnx_canonical import canonicalize

    if info.format == "tflite":
        with warnings.catch_warnings():  # tf2onnx reads the graph with tf.lite.Interpreter, deprecated in TF 2.20
            warnings.simplefilter("ignore", UserWarning)
            model, _ = tf2onnx.convert.from_tflite(str(info.path), opset=ONNX_OPSET)
    else:
        from ..model.tf_model import concrete_function

        # The same concrete function to_tflite and the reference use (tf2onnx's from_keras fails on a
        # Keras 3 Sequential). Its outputs come out as Identity, Identity_1, ... in order; name them as ModelInfo does.
        function = concrete_function(info.path, info.format, info.sha256, tuple(info.inputs))
        specs = [tf.TensorSpec(t.shape, tf.as_dtype(t.dtype), name=t.name) for t in info.inputs]
        model, _ = tf2onnx.convert.from_function(
            tf.function(lambda *tensors: function(*tensors)), input_signature=specs, opset=ONNX_OPSET
        )
        _rename_outputs(model.graph, [t.name for t in info.outputs])
    canonicalize(model)
    onnx.save(model, str(output))
    # tf2onnx logs unsupported ops and still returns a model; ONNX Runtime refuses such a model.
    try:
        onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own exception types
        raise BuildError(
            f"tf2onnx turned {info.path} into an ONNX model ONNX Runtime cannot load: {reason(err)}."
        ) from None


def _run_torch_onnx_export(info: ModelInfo, output: Path) -> None:
    """torch.onnx.export at the pinned shapes, inputs and outputs named as ModelInfo names them. TorchScript goes
    through the TorchScript-based exporter: the dynamo exporter takes nn.Modules and exported programs only."""
    import onnx
    import torch

    from ..model.torch_model import load_program
    from .onnx_canonical import canonicalize

    program = load_program(info.path, info.format)
    example = tuple(torch.from_numpy(np.zeros(t.shape, dtype=t.dtype)) for t in info.inputs)
    names = {"input_names": [t.name for t in info.inputs], "output_names": [t.name for t in info.outputs]}
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated; both warn about what they skip
        warnings.simplefilter("ignore")
        if info.format == "torch-export":
            exported = torch.onnx.export(program, example, dynamo=True, opset_version=ONNX_OPSET, verbose=False,
                                         optimize=True, **names)
            model = exported.model_proto
        else:
            torch.onnx.export(program, example, str(output), dynamo=False, opset_version=ONNX_OPSET, **names)
            model = onnx.load(str(output))
    canonicalize(model)
    onnx.save(model, str(output))


def _rename_outputs(graph, names: list[str]) -> None:
    renamed = {value.name: name for value, name in zip(graph.output, names)}
    for value in graph.output:
        value.name = renamed[value.name]
    for node in graph.node:
        node.input[:] = [renamed.get(n, n) for n in node.input]
        node.output[:] = [renamed.get(n, n) for n in node.output]


def tflite_converter(info: ModelInfo, mode: str, calibration: np.ndarray | None = None, io: str = "float"):
    """TensorFlow's TFLiteConverter for a Keras or SavedModel model, set for `mode` (fp16, dynamic, int8 with int8
    or float inputs and outputs, int16x8); int8 and int16x8 calibrate on `calibration`."""
    import tensorflow as tf

    from ..model.tf_model import concrete_function

    function = concrete_function(info.path, info.format, info.sha256, tuple(info.inputs))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: dynamic-range
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode in ("int8", "int16x8", "mixed"):
        converter.representative_dataset = lambda: ([sample] for sample in calibration)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 if mode == "int16x8"
            else tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if (mode, io) == ("int8", "int8"):
            converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter


def write_tflite(flatbuffer: bytes, target: Path, source: ModelInfo) -> ModelInfo:
    with atomic_file(target) as temporary:
        temporary.write_bytes(flatbuffer)
    return _reload(target, source)


def _reload(target: Path, source: ModelInfo) -> ModelInfo:
    """load_model() of a converted file, at the source's input shapes where the file left a dim dynamic.

    ONNX keeps no quantization parameters on a graph's inputs and outputs: a converted int8 tensor
    carries the source's, so that validation compares it in LSB like the source's."""
    converted = load_model(target)
    if [t.shape for t in converted.inputs] != [t.shape for t in source.inputs]:
        converted = load_model(target, {c.name: s.shape for c, s in zip(converted.inputs, source.inputs)})
    converted.inputs = _with_quantization(converted.inputs, source.inputs)
    converted.outputs = _with_quantization(converted.outputs, source.outputs)
    return converted


def _with_quantization(tensors: list[TensorInfo], sources: list[TensorInfo]) -> list[TensorInfo]:
    return [replace(t, quant=s.quant) if t.quant is None and t.dtype == s.dtype and t.shape == s.shape else t
            for t, s in zip(tensors, sources)]
