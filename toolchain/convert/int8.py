"""Full-integer int8 quantization (post-training): a Keras or SavedModel model -> an int8 .tflite.

Every operator, input and output becomes int8 (what NPUs such as the Ethos-U run), calibrated on
representative inputs: the dataset's training split when it has one, so calibration and validation
do not share samples.
"""

import warnings
from pathlib import Path

import numpy as np

from ..errors import BadInput, BuildError
from ..model import ModelInfo
from ..model.reasons import reason
from . import _reload, _write_atomically

CALIBRATION_SAMPLES = 200
# Calibration prefers training data; validation (validate.make_inputs) reads x_test first.
_CALIBRATION_KEYS = ("x_train", "x", "x_test")


def calibration_inputs(dataset: Path, model: ModelInfo, samples: int = CALIBRATION_SAMPLES) -> np.ndarray:
    """Up to `samples` float inputs from a .npz, each shaped as the model's one input."""
    if len(model.inputs) != 1:
        raise BadInput(f"{dataset}: calibration data feeds single-input models, and {model.path.name} has "
                       f"{len(model.inputs)}.")
    try:
        data = np.load(dataset)
    except (OSError, ValueError) as err:
        raise BadInput(f"{dataset}: not a readable .npz dataset ({err}).") from None
    key = next((k for k in _CALIBRATION_KEYS if k in data), None)
    if key is None:
        raise BadInput(f"{dataset}: has none of the arrays {', '.join(_CALIBRATION_KEYS)} to calibrate with.")
    spec = model.inputs[0]
    x = data[key][:samples].astype(np.float32)
    try:
        return x.reshape((x.shape[0], *spec.shape))
    except ValueError:
        raise BadInput(f"{dataset}: samples of shape {list(data[key].shape[1:])} do not fit input "
                       f"'{spec.name}' of shape {list(spec.shape)}.") from None


def to_int8_tflite(info: ModelInfo, out_dir: Path, calibration: np.ndarray) -> ModelInfo:
    """An int8 .tflite (int8 inputs and outputs) of a Keras or SavedModel model, calibrated on `calibration`."""
    if info.format not in ("keras", "savedmodel"):
        raise BadInput(f"{info.path}: --quantize int8 needs the Keras or SavedModel model to calibrate; "
                       f"a {info.format} model cannot be requantized (export it as int8 instead).")
    import tensorflow as tf

    from ..model.tf_model import concrete_function

    function = concrete_function(info.path, info.format, info.sha256, tuple(info.inputs))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample] for sample in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        with warnings.catch_warnings():  # TF warns that int8 inputs come without statistics: calibration gives them
            warnings.simplefilter("ignore", UserWarning)
            flatbuffer = converter.convert()
    except Exception as err:  # the converter raises many types (ConverterError, ValueError, ...)
        raise BuildError(f"quantizing {info.path} to int8 failed: {reason(err)}.") from None
    target = Path(out_dir) / f"{info.stem}_int8.tflite"
    _write_atomically(target, lambda temporary: temporary.write_bytes(flatbuffer))
    return _reload(target, info)
