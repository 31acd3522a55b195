"""The .npz dataset conventions every command shares.

    x_test, y_test   the held-out split: validation inputs and the accuracy's labels (first choice)
    x, y             a plain labelled set: the same, when there is no x_test
    x_train, y_train the training split: calibration (first choice), fine-tuning and distillation
Labels are class indices ([N] or [N, 1]) or one-hot rows ([N, classes]).
"""

import numpy as np

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
