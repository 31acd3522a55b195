"""Post-training quantization: a float model -> fp16, dynamic-range, full-integer int8, int16x8 (16-bit activations,
8-bit weights) or mixed (int8 but for the layers int8 hurts most: convert/mixed.py), in the backend's format.

TFLite (for litert, tvm, vela) comes from TensorFlow's TFLite converter on the Keras or SavedModel
source; ONNX (for onnxruntime, and tvm given an .onnx) from ONNX Runtime's quantization tools on the
float .onnx. Full-integer int8 is calibrated on representative inputs: by default the dataset's
training split, so calibration and validation (validate.make_inputs reads x_test first) do not share
samples. A .tflite cannot be requantized: its float source is gone.
"""

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import BadInput, BuildError, reason
from ..model import TORCH_FORMATS, ModelInfo, model_format, model_sha256
from ..model.data import CALIBRATION_KEYS, load_npz
from ..pipeline.validate import FLOAT_TOLERANCE
from . import _reload, tflite_converter, write_tflite

MODES = ("none", "fp16", "dynamic", "int8", "int16x8", "mixed")
CALIBRATED = ("int8", "int16x8", "mixed")  # modes that need calibration data
DEFAULT_ACCURACY_BUDGET = 0.5  # --quantize mixed: the accuracy drop allowed, in percentage points
IO_TYPES = ("int8", "float")
CALIBRATION_SAMPLES = 200  # the first N samples of the calibration data
_TF_FORMATS = ("keras", "savedmodel")

METHODS = {
    ("tflite", "fp16"): "TFLite converter: float16 weights, float32 compute",
    ("tflite", "dynamic"): "TFLite converter: dynamic-range (int8 weights, float activations)",
    ("tflite", "int8"): "TFLite converter: full integer (int8 weights and activations)",
    ("tflite", "int16x8"): "TFLite converter: 16-bit activations, int8 weights "
                           "(EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8), float inputs and outputs",
    ("tflite", "mixed"): "TFLite converter: int8, with the layers most sensitive to int8 (measured by LiteRT's "
                         "QuantizationDebugger) kept in float until the accuracy drop is within the budget; float "
                         "inputs and outputs",
    ("onnx", "fp16"): "ONNX Runtime float16 conversion: float16 weights and compute, float32 inputs and outputs",
    ("onnx", "dynamic"): "ONNX Runtime quantize_dynamic: int8 weights in a 7-bit range, activations quantized at "
                         "run time",
    ("onnx", "int8"): "ONNX Runtime quantize_static: QDQ, int8 activations, int8 weights in a 7-bit range",
}


@dataclass(frozen=True)
class Request:
    """What a build quantizes to, settled from the options before any heavy work."""

    mode: str  # fp16, dynamic, int8, int16x8 or mixed
    io: str | None  # int8 mode: "int8" or "float" inputs and outputs; None otherwise
    calibration: Path | None  # --calibration; None: the build's dataset
    eval_data: Path | None  # --eval-data; None: the build's dataset when it has labels
    accuracy_budget: float | None = None  # mixed: the accuracy drop allowed, in percentage points

    def cache_key(self) -> dict:
        return {"mode": self.mode, "io": self.io,
                "calibration": model_sha256(self.calibration) if self.calibration else None,
                "eval_data": model_sha256(self.eval_data) if self.eval_data else None,
                "accuracy_budget": self.accuracy_budget}


@dataclass(frozen=True)
class Calibration:
    inputs: np.ndarray  # (samples, *input shape), float32
    source: str  # for the report: "digits.npz (x_train)", "calibration/ (3 files)"


def plan(mode: str | None, io: str | None, calibration: Path | None, eval_data: Path | None,
         model_path: Path | None, backend, has_data: bool, accuracy_budget=None) -> Request | None:
    """The quantization a build does, or None; BadInput for options that do not fit together.

    `model_path` None is the embedded default model (Keras); `has_data` says whether a dataset
    (--data, or the default model's) can calibrate when --calibration is not given. A backend that
    runs int8 only (`needs_int8`) gets int8 without asking when a Keras or SavedModel model and
    calibration data are at hand.
    """
    if mode not in (None, *MODES):
        raise BadInput(f"--quantize takes {', '.join(MODES)}, not '{mode}'.")
    if io not in (None, *IO_TYPES):
        raise BadInput(f"--quantize-io takes {' or '.join(IO_TYPES)}, not '{io}'.")
    source_format = model_format(model_path) if model_path is not None else "keras"
    if mode is None:
        automatic = (backend.caps.needs_int8 and source_format in _TF_FORMATS
                     and (calibration is not None or has_data))
        mode = "int8" if automatic else "none"
    if accuracy_budget is not None and mode != "mixed":
        raise BadInput("--accuracy-budget applies only to --quantize mixed and --precision auto.")
    if mode == "none":
        given = [flag for flag, value in (("--quantize-io", io), ("--calibration", calibration),
                                          ("--eval-data", eval_data)) if value is not None]
        if given:
            raise BadInput(f"{_listed(given)} only with --quantize fp16, dynamic, int8, int16x8 or mixed.")
        return None
    if io is not None and mode != "int8":
        raise BadInput(f"--quantize-io applies only to --quantize int8; {mode} keeps float32 inputs and outputs.")
    if calibration is not None and mode not in CALIBRATED:
        raise BadInput(f"--calibration applies only to --quantize {', '.join(CALIBRATED)}; {mode} needs no "
                       "calibration data.")
    if source_format == "tflite":
        raise BadInput(f"{model_path}: a .tflite model cannot be requantized; give the Keras or SavedModel model "
                       "it was converted from (or an ONNX model) with --model.")
    target_format = quantized_format(source_format, backend)
    if target_format is None:
        raise BadInput(f"--quantize makes TFLite or ONNX models, and backend '{backend.name}' compiles "
                       f"{' or '.join(backend.caps.formats)} models only.")
    if mode in ("int16x8", "mixed") and target_format != "tflite":
        raise BadInput(f"--quantize {mode} makes TFLite models (from a Keras or SavedModel model), and backend "
                       f"'{backend.name}' compiles {' or '.join(backend.caps.formats)} models.")
    if mode == "int16x8" and not backend.caps.int16_activations:
        raise BadInput(f"backend '{backend.name}' cannot run 16-bit activations (--quantize int16x8); use --backend "
                       "litert.")
    if mode in CALIBRATED:
        if calibration is None and not has_data:
            raise BadInput(f"--quantize {mode} needs calibration data: --calibration PATH (.npz, .npy or a folder of "
                           "them) or --data FILE.npz.")
        if calibration is not None and not Path(calibration).exists():
            raise BadInput(f"{calibration}: calibration data not found.")
    if mode == "int8":
        if target_format == "onnx" and io == "int8":
            raise BadInput("ONNX Runtime's static quantization keeps float32 inputs and outputs (QDQ); use "
                           "--quantize-io float, or a backend that compiles TFLite for int8 inputs and outputs.")
        io = io or ("int8" if target_format == "tflite" else "float")
    if eval_data is not None:
        from ..pipeline.accuracy import labelled_split

        if not Path(eval_data).is_file():
            raise BadInput(f"{eval_data}: evaluation data file not found.")
        if labelled_split(Path(eval_data)) is None:
            raise BadInput(f"{eval_data}: evaluation data needs inputs and their labels: arrays x and y, or x_test "
                           "and y_test.")
    if mode == "mixed":
        accuracy_budget = budget_points(DEFAULT_ACCURACY_BUDGET if accuracy_budget is None else accuracy_budget)
    return Request(mode, io, Path(calibration) if calibration else None, Path(eval_data) if eval_data else None,
                   accuracy_budget)


def budget_points(value) -> float:
    """--accuracy-budget: percentage points from 0 to 100 (BadInput otherwise)."""
    try:
        budget = float(value)
    except (TypeError, ValueError):
        budget = -1.0
    if not 0 <= budget <= 100:  # NaN fails too
        raise BadInput(f"--accuracy-budget takes percentage points from 0 to 100, not '{value}'.")
    return budget


def _listed(flags: list[str]) -> str:
    return f"{' and '.join(flags)} appl{'y' if len(flags) > 1 else 'ies'}"


def quantized_format(source_format: str, backend) -> str | None:
    """The format a model quantizes to for a backend: the first of its formats the source reaches
    (as build._in_backend_format converts), None when that is neither TFLite nor ONNX."""
    for fmt in backend.caps.formats:
        if fmt == source_format or (fmt in ("tflite", "onnx") and source_format in _TF_FORMATS) or (
                fmt == "onnx" and source_format in TORCH_FORMATS):
            return fmt if fmt in ("tflite", "onnx") else None
    return None


def quantize_for_build(source: ModelInfo, float_model: ModelInfo, request: Request, dataset: Path | None,
                       workdir: Path, progress) -> tuple[ModelInfo, dict]:
    """The quantized model (in float_model's format) and the report's quantization section, but for the
    accuracy keys (accuracy.accuracy_change adds them once the build validated).

    `float_model` is the source in the backend's format: what the quantized model's size and accuracy
    are compared with."""
    calibration = None
    if request.mode in CALIBRATED:
        calibration = load_calibration(request.calibration or dataset, float_model)
        progress(f"quantizing {source.path.name} to {request.mode}, calibrated on {calibration.source} "
                 f"({len(calibration.inputs)} samples)")
    else:
        progress(f"quantizing {source.path.name} to {request.mode}")
    io = request.io or "float"
    mixed = None
    if request.mode == "mixed":
        from .mixed import mixed_tflite

        quantized, mixed = mixed_tflite(source, float_model, workdir, calibration.inputs, request.eval_data or dataset,
                                        request.accuracy_budget, progress)
        method = METHODS["tflite", "mixed"]
    else:
        quantized, method = quantize(source, float_model, request.mode, workdir,
                                     calibration.inputs if calibration else None, io)
    section = {
        "mode": request.mode,
        "method": method,
        "io": "/".join(sorted({t.dtype for t in quantized.inputs + quantized.outputs})),
        "calibration": {"source": calibration.source, "samples": len(calibration.inputs)} if calibration else None,
        "bytes": {"float": float_model.path.stat().st_size, "quantized": quantized.path.stat().st_size},
        # Weights and other constants alone: in a small model the graph's own bytes can outweigh them.
        "weight_bytes": {"float": weight_bytes(float_model), "quantized": weight_bytes(quantized)},
        # ONNX's float16 conversion computes in float16 behind float32 inputs and outputs: validation then
        # allows what it allows float16 outputs (another runtime may round each step differently).
        "validation_tolerance": ({"float32": FLOAT_TOLERANCE["float16"]}
                                 if (quantized.format, request.mode) == ("onnx", "fp16") else None),
        "mixed": mixed,  # --quantize mixed: the per-layer sensitivity table and the search (convert/mixed.py)
    }
    return quantized, section


def quantize(source: ModelInfo, float_model: ModelInfo, mode: str, out_dir: Path,
             calibration: np.ndarray | None = None, io: str = "int8") -> tuple[ModelInfo, str]:
    """(the quantized model, how it was made) in float_model's format; TFLite from the TF source."""
    if float_model.format == "tflite":
        return to_quantized_tflite(source, out_dir, mode, calibration, io), METHODS["tflite", mode]
    if float_model.format == "onnx":
        return to_quantized_onnx(float_model, out_dir, mode, calibration)
    raise BadInput(f"{float_model.path}: --quantize makes TFLite or ONNX models, not {float_model.format}.")


def to_quantized_tflite(info: ModelInfo, out_dir: Path, mode: str, calibration: np.ndarray | None = None,
                        io: str = "int8") -> ModelInfo:
    """A quantized .tflite of a Keras or SavedModel model; int8 needs `calibration` (samples of the one input)."""
    if info.format not in _TF_FORMATS:
        raise BadInput(f"{info.path}: a {info.format} model cannot be requantized to TFLite; give the Keras or "
                       "SavedModel model it was converted from.")
    converter = tflite_converter(info, mode, calibration, io)
    try:
        with warnings.catch_warnings():  # TF warns that int8 inputs come without statistics: calibration gives them
            warnings.simplefilter("ignore", UserWarning)
            flatbuffer = converter.convert()
    except Exception as err:  # the converter raises many types (ConverterError, ValueError, ...)
        raise BuildError(f"quantizing {info.path} to {mode} failed: {reason(err)}.") from None
    return write_tflite(flatbuffer, Path(out_dir) / f"{info.stem}_{mode}.tflite", info)


def to_quantized_onnx(info: ModelInfo, out_dir: Path, mode: str,
                      calibration: np.ndarray | None = None) -> tuple[ModelInfo, str]:
    """(a quantized .onnx of a float .onnx, how it was made). int8 is static QDQ calibrated on `calibration`,
    with per-channel weights only when they bring the outputs closer to the float model's on that data.

    Weights keep to 7 bits (reduce_range): ONNX Runtime's int8 kernels for x86 CPUs without VNNI
    (AVX2) add products in saturating 16-bit pairs, which with full-range weights put the default
    model's outputs up to 105 LSB off the model run as written (26 LSB off ONNX Runtime on ARM)."""
    target = Path(out_dir) / f"{info.stem}_{mode}.onnx"
    try:
        with _quiet_onnxruntime():
            if mode == "fp16":
                import onnx
                from onnxruntime.transformers.float16 import convert_float_to_float16
                from onnxruntime.transformers.onnx_model import OnnxModel

                model = convert_float_to_float16(onnx.load(str(info.path)), keep_io_types=True)
                OnnxModel.graph_topological_sort(model.graph)  # the conversion appends its input casts last
                with atomic_file(target) as temporary:
                    onnx.save(model, str(temporary))
            elif mode == "dynamic":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                with atomic_file(target) as temporary:
                    quantize_dynamic(info.path, temporary, weight_type=QuantType.QInt8, reduce_range=True)
            else:
                return _static_int8_onnx(info, target, calibration)
    except (BadInput, BuildError):
        raise
    except Exception as err:  # ONNX Runtime's tools raise many types
        raise BuildError(f"quantizing {info.path} to {mode} with ONNX Runtime failed: {reason(err)}.") from None
    return _reload(target, info), METHODS["onnx", mode]


def _static_int8_onnx(info: ModelInfo, target: Path, calibration: np.ndarray) -> tuple[ModelInfo, str]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from ..model.reference import reference_outputs

    name = info.inputs[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(calibration)

        def get_next(self):
            sample = next(self.samples, None)
            return None if sample is None else {name: sample}

    float_outputs = reference_outputs(info, [calibration])
    best = None
    for per_channel in (False, True):
        candidate = target.with_name(f"{target.stem}_{'per_channel' if per_channel else 'per_tensor'}.onnx")
        with atomic_file(candidate) as temporary:
            quantize_static(info.path, temporary, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        model = _reload(candidate, info)
        outputs = reference_outputs(model, [calibration])
        error = max(float(np.mean(np.abs(q - f))) for q, f in zip(outputs, float_outputs))
        if best is None or error < best[0]:  # a tie keeps per-tensor: fewer scales
            best = (error, per_channel, candidate)
    _, per_channel, chosen = best
    chosen.replace(target)
    how = ("per-channel weights (closer to the float outputs on the calibration data than per-tensor)" if per_channel
           else "per-tensor weights (per-channel brought the outputs no closer on the calibration data)")
    return _reload(target, info), f"{METHODS['onnx', 'int8']}, {how}"


def weight_bytes(model: ModelInfo) -> int:
    """Bytes of constant data in a .tflite (its buffers) or an .onnx (its initializers)."""
    if model.format == "tflite":
        import tflite

        flatbuffer = tflite.Model.GetRootAsModel(model.path.read_bytes(), 0)
        buffers = (flatbuffer.Buffers(i) for i in range(flatbuffer.BuffersLength()))
        # Models over 2 GB keep buffers outside the flatbuffer: Size() then holds their length.
        return sum(max(buffer.DataLength(), buffer.Size()) for buffer in buffers)
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(model.path)).graph.initializer)


@contextmanager
def _quiet_onnxruntime():
    """ONNX Runtime's quantizer logs advice to the root logger (and so to the user's terminal)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def load_calibration(path: Path, model: ModelInfo, samples: int = CALIBRATION_SAMPLES) -> Calibration:
    """Up to `samples` float inputs for the model's one input, from an .npz (x_train, x or x_test),
    an .npy array, or a folder of such files (in name order)."""
    path = Path(path)
    if len(model.inputs) != 1:
        raise BadInput(f"{path}: calibration data feeds single-input models, and {model.path.name} has "
                       f"{len(model.inputs)}.")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".npz", ".npy") and p.is_file())
        if not files:
            raise BadInput(f"{path}: the calibration folder holds no .npz or .npy files.")
        arrays, total = [], 0
        for file in files:
            if total >= samples:
                break
            x, _ = _calibration_array(file, model, samples - total)
            arrays.append(x)
            total += len(x)
        return Calibration(np.concatenate(arrays), f"{path.name}/ ({len(arrays)} file{'s' * (len(arrays) > 1)})")
    x, key = _calibration_array(path, model, samples)
    return Calibration(x, f"{path.name} ({key})" if key else path.name)


def _calibration_array(path: Path, model: ModelInfo, samples: int) -> tuple[np.ndarray, str | None]:
    """(up to `samples` inputs from one .npz or .npy file, shaped for the model, as float32; the .npz key)."""
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise BadInput(f"{path}: calibration data must be an .npz, an .npy or a folder of them, not "
                       f"{suffix or 'a file without extension'}.")
    key = None
    if suffix == ".npz":
        arrays = load_npz(path)
        key = next((k for k in CALIBRATION_KEYS if k in arrays), None)
        if key is None:
            raise BadInput(f"{path}: has none of the arrays {', '.join(CALIBRATION_KEYS)} to calibrate with.")
        data = arrays[key]
    else:
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise BadInput(f"{path}: not a readable {suffix} file ({reason(err)}).") from None
    spec = model.inputs[0]
    if data.dtype.kind not in "fiub" or data.ndim == 0 or len(data) == 0:
        raise BadInput(f"{path}: holds {data.shape} {data.dtype} data, not numeric samples to calibrate with.")
    x = data[:samples].astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise BadInput(f"{path}: the calibration samples hold NaN or infinite values.")
    try:
        return x.reshape((x.shape[0], *spec.shape)), key
    except ValueError:
        raise BadInput(f"{path}: samples of shape {list(data.shape[1:])} do not fit input '{spec.name}' of shape "
                       f"{list(spec.shape)}.") from None
