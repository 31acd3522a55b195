"""What pruning and distillation share: the inputs (model, labelled data), seeded training, accuracy,
the figures a report compares (params, MACs, sizes), and writing the model with its report.
"""

import gzip
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_file, atomic_write
from ..errors import BadInput
from ..model.data import TRAINING_KEYS, class_indices, load_npz

SEED = 1234
BATCH_SIZE = 32
OUTPUT_DIR = Path("build") / "compress"


@dataclass
class CompressResult:
    model: Path  # the written .keras
    report: dict  # also in <model stem>.json / .md beside it


@dataclass
class LabelledData:
    path: Path
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def resolve_inputs(model: Path | None, data: Path | None, option: str) -> tuple[Path, Path | None]:
    """The Keras model and dataset to start from: the given ones, or the embedded default model and its digits."""
    from ..model import model_format

    if model is None:
        from ..model.default import default_model

        model, default_data = default_model()
        data = data or default_data
    fmt = model_format(Path(model))
    if fmt != "keras":
        raise BadInput(f"{model}: {option} takes a Keras model (.keras or .h5), not a {fmt} model.")
    if data is not None and not Path(data).is_file():
        raise BadInput(f"{data}: dataset file not found.")
    return Path(model), Path(data) if data else None


def output_path(out: Path | None, source: Path, suffix: str) -> Path:
    """--out, else build/compress/<source stem><suffix>.keras."""
    path = Path(out) if out else OUTPUT_DIR / f"{source.name.split('.')[0]}{suffix}.keras"
    if path.suffix not in (".keras", ".h5"):
        raise BadInput(f"--out {path}: a Keras model file needs the .keras (or .h5) extension.")
    return path


def load_keras_copy(path: Path):
    """A private copy of the Keras model (the ingest cache's instance is shared, and training changes weights)."""
    import keras

    from ..model import model_sha256
    from ..model.tf_model import load_keras

    original = load_keras(str(path), model_sha256(path))
    copy = keras.models.clone_model(original)
    copy.set_weights(original.get_weights())
    return copy


def load_data(path: Path, model) -> LabelledData:
    """The .npz's training and test splits, shaped as the model's input, labels as class indices."""
    arrays = load_npz(path)
    missing = [key for key in TRAINING_KEYS if key not in arrays]
    if missing:
        raise BadInput(f"{path}: needs the arrays {', '.join(TRAINING_KEYS)} and has no {', '.join(missing)}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise BadInput(f"{path}: labelled data trains single-input classifiers with (batch, classes) outputs, "
                       f"and the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs "
                       f"{[tuple(t.shape) for t in model.outputs]}.")
    input_shape, classes = tuple(model.inputs[0].shape[1:]), model.outputs[0].shape[-1]
    splits = []
    for x_key, y_key in (("x_train", "y_train"), ("x_test", "y_test")):
        x, y = arrays[x_key], arrays[y_key]
        try:
            x = x.astype(np.float32).reshape((x.shape[0], *input_shape))
        except ValueError:
            raise BadInput(f"{path}: '{x_key}' samples of shape {list(x.shape[1:])} do not fit the model's input "
                           f"shape {list(input_shape)}.") from None
        labels = class_indices(y) if y.ndim in (1, 2) else y  # anything else fails the check below
        if labels.shape != (x.shape[0],) or not np.array_equal(labels, np.round(labels)) \
                or labels.min() < 0 or labels.max() >= classes:
            raise BadInput(f"{path}: '{y_key}' must hold one class index (0..{classes - 1}) or one-hot row per "
                           f"sample of '{x_key}'.")
        splits += [x, labels.astype(np.int32)]
    return LabelledData(path, *splits)


def output_activation(model, source: str) -> str:
    """'softmax' or 'linear' (logits): how the classifier's last layer ends; BadInput for anything else."""
    layer = _output_layer(model)
    activation = "softmax" if type(layer).__name__ == "Softmax" else layer.get_config().get("activation", "linear")
    if activation not in ("softmax", "linear"):
        raise BadInput(f"{source}: the output layer '{layer.name}' ends in {activation!r}; fine-tuning and "
                       "distillation train classifiers whose output is softmax probabilities or logits.")
    return activation


def logits_model(model):
    """The same model without its final softmax (weights copied): its outputs are the classifier's logits."""
    import keras

    output = _output_layer(model)

    def clone(layer):
        if layer is not output:
            return layer.__class__.from_config(layer.get_config())
        if type(layer).__name__ == "Softmax":
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config({**layer.get_config(), "activation": "linear"})

    logits = keras.models.clone_model(model, clone_function=clone)
    logits.set_weights(model.get_weights())
    return logits


def _output_layer(model):
    return model.outputs[0]._keras_history.operation  # the layer that made the output tensor


def seeded() -> None:
    """Same weights and the same batches on every run with the same TensorFlow (process-wide switches)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()


def fit(model, x: np.ndarray, y: np.ndarray, loss, epochs: int, learning_rate: float, callbacks=()) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0, callbacks=list(callbacks))


def accuracy(model, data: LabelledData | None) -> float | None:
    """Top-1 accuracy on the test split (None without data)."""
    if data is None:
        return None
    predictions = model.predict(data.x_test, batch_size=256, verbose=0).argmax(axis=-1)
    return round(float(np.mean(predictions == data.y_test)), 4)


def measure(path: Path) -> dict:
    """Parameters and MACs (the ingest's counters) and size: the float TFLite, and that gzipped."""
    from ..convert import to_tflite
    from ..model import load_model

    info = load_model(path)
    with tempfile.TemporaryDirectory() as workdir:
        flatbuffer = to_tflite(info, Path(workdir)).path.read_bytes()
    return {"params": info.params, "macs": info.macs, "tflite_bytes": len(flatbuffer),
            # Zeroed weights cost as much as any others in a flat file; compressed, they nearly vanish.
            "tflite_gzip_bytes": len(gzip.compress(flatbuffer, compresslevel=9, mtime=0))}


def model_entry(path: Path, shown_path: Path, test_accuracy: float | None, **extra) -> dict:
    """One model's row in a report: where it is, what it costs, how accurate it is."""
    from ..model import model_sha256

    return {"path": str(shown_path), "sha256": model_sha256(path), **measure(path), "test_accuracy": test_accuracy,
            **extra}


def write_outputs(model, out: Path, make_report: Callable[[Path], dict]) -> dict:
    """Save the model to `out` and its report beside it (<stem>.json, <stem>.md), all or nothing.

    The model is saved to a temporary file beside `out` first; make_report(staged model) builds the
    report from it, so nothing half-written ever appears under the final names.
    """
    import keras

    from ..codegen import render_text

    plain = keras.models.clone_model(model)  # without the fine-tuning's optimizer state
    plain.set_weights(model.get_weights())
    stem = out.name.rsplit(".", 1)[0]
    with atomic_file(out) as staged:  # the model last: its presence marks a complete set
        plain.save(staged)
        report = make_report(staged)
        markdown = render_text("compress_report.md.j2", report=report)
        atomic_write(out.parent / f"{stem}.json", json.dumps(report, indent=2) + "\n")
        atomic_write(out.parent / f"{stem}.md", markdown)
    return report


def summary(report: dict) -> str:
    """A few lines for a human after `invoke prune` or `invoke distill`."""
    from ..console import table

    rows = [[m["role"], f"{m['params']:,}", f"{m['macs']:,}", f"{m['tflite_bytes']:,}", f"{m['tflite_gzip_bytes']:,}",
             "-" if m["test_accuracy"] is None else f"{m['test_accuracy']:.2%}"] for m in report["models"]]
    lines = [report["method"], table(["model", "params", "MACs", "float tflite B", "gzipped B", "test accuracy"], rows)]
    if report.get("sparsity"):
        lines.append(f"sparsity: {report['sparsity']['measured']:.1%} of the prunable weights are zero")
    lines.append(f"wrote {report['models'][-1]['path']} (report beside it); time it with: {report['bench']}")
    return "\n".join(lines)
