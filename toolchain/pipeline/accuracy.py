"""Top-1 accuracy on labelled data: what quantization costs, measured on the host over a whole eval set.

Both models run in their reference frameworks (toolchain.model.reference), so the figures say what
the quantized model is worth, not how a backend ran it (validation says that).
"""

import sys
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..model.data import class_indices, eval_split, load_npz
from ..model.info import ModelInfo
from .validate import make_inputs

_NO_LABELS = "give --eval-data FILE.npz (arrays x and y, or x_test and y_test)"


def labelled_split(dataset: Path) -> str | None:
    """The inputs' name in a dataset file, x_test or x, when their labels are there too (y_test, y); else None.

    validate.make_inputs reads the same split: x_test when there is one, else x."""
    try:
        data = load_npz(dataset)
    except BadInput:  # validation reads the same file and says what is wrong with it
        return None
    split = eval_split(data)
    return split[0] if split and split[1] in data else None


def top1_predictions(model: ModelInfo, dataset: Path) -> tuple[np.ndarray, np.ndarray]:
    """(the model's top-1 class, the label's class) for every labelled sample of the file."""
    from ..model.reference import reference_outputs

    inputs = make_inputs(model, sys.maxsize, dataset)  # all of them; make_inputs slices [:samples]
    if inputs.labels is None:
        raise BadInput(f"{dataset}: has no labels for its inputs (y_test beside x_test, or y beside x).")
    scores = reference_outputs(model, inputs.tensors)[0]
    return scores.reshape(len(scores), -1).argmax(axis=1), class_indices(inputs.labels)


def top1_accuracy(model: ModelInfo, dataset: Path) -> tuple[float, int]:
    """(fraction of samples whose top-1 class is the label, samples) over every labelled sample of the file."""
    predicted, labels = top1_predictions(model, dataset)
    return float(np.mean(predicted == labels)), len(labels)


def accuracy_change(float_model: ModelInfo, quantized: ModelInfo, eval_data: Path | None, dataset: Path | None,
                    progress) -> dict:
    """The quantization report's accuracy keys: `accuracy` (both models' accuracy and the change in points)
    or None with `accuracy_unavailable` saying why.

    `eval_data` (--eval-data) must be labelled; otherwise the build's dataset is used when it is.
    """
    if eval_data is None:
        if dataset is None:
            return _unavailable(f"no labelled data: {_NO_LABELS}")
        if labelled_split(dataset) is None:
            return _unavailable(f"{dataset.name} has no labelled test split: {_NO_LABELS}")
        eval_data = dataset
    if np.prod(float_model.outputs[0].shape) < 2:
        return _unavailable("the model's first output is not a vector of class scores, so top-1 accuracy does not "
                            "apply")
    progress(f"measuring top-1 accuracy of the float and the quantized model on {eval_data.name}")
    float_accuracy, samples = top1_accuracy(float_model, eval_data)
    quantized_accuracy, _ = top1_accuracy(quantized, eval_data)
    accuracy = {"data": f"{eval_data.name} ({labelled_split(eval_data)})", "samples": samples,
                "float": float_accuracy, "quantized": quantized_accuracy,
                "change_points": round(100 * (quantized_accuracy - float_accuracy), 2)}
    return {"accuracy": accuracy, "accuracy_unavailable": None}


def _unavailable(why: str) -> dict:
    return {"accuracy": None, "accuracy_unavailable": why}
