"""The .npz dataset conventions every command shares.

    x_test, y_test   the held-out split: validation inputs and the accuracy's labels (first choice)
    x, y             a plain labelled set: the same, when there is no x_test
    x_train, y_train the training split: calibration (first choice), fine-tuning and distillation
Labels are class indices ([N] or [N, 1]) or one-hot rows ([N, classes]).
"""

import zipfile
from pathlib import Path

import numpy as np

from ..errors import BadInput, reason

EVAL_SPLITS = (("x_test", "y_test"), ("x", "y"))  # validation and accuracy read the first present
CALIBRATION_KEYS = ("x_train", "x", "x_test")  # calibration prefers training data
TRAINING_KEYS = ("x_train", "y_train", "x_test", "y_test")  # prune and distill need all four


def eval_split(data) -> tuple[str, str] | None:
    """(inputs key, labels key) of the split validation reads from an opened .npz; None without one."""
    return next(((x, y) for x, y in EVAL_SPLITS if x in data), None)


def class_indices(labels: np.ndarray) -> np.ndarray:
    """Class indices from labels given as indices ([N] or [N, 1]) or as one-hot rows ([N, classes])."""
    rows = labels.reshape(len(labels), -1)
    return rows.argmax(axis=1) if rows.shape[1] > 1 else rows[:, 0]


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, read now and checked: numeric (no objects, which would need pickle, and no
    strings), at least one sample, and each labels array (y, y_test, y_train) as long as its inputs.
    BadInput naming the file and the array otherwise."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise BadInput(f"{path}: dataset file not found.") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise BadInput(f"{path}: not a readable .npz dataset ({reason(err)}).") from None
    for key, array in arrays.items():
        if array.dtype.kind not in "fiub":
            raise BadInput(f"{path}: array '{key}' holds {array.dtype} values; datasets hold numbers.")
        if array.ndim == 0 or len(array) == 0:
            raise BadInput(f"{path}: array '{key}' holds no samples (shape {list(array.shape)}).")
    for x_key, y_key in (*EVAL_SPLITS, ("x_train", "y_train")):
        if x_key in arrays and y_key in arrays and len(arrays[y_key]) != len(arrays[x_key]):
            raise BadInput(f"{path}: '{y_key}' has {len(arrays[y_key])} labels for the {len(arrays[x_key])} "
                           f"samples of '{x_key}'.")
    return arrays
