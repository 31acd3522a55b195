"""The embedded default model: a small CNN trained on scikit-learn's bundled digits (real data, no download).

Built once into the user's cache and reused; a cache hit checks files only and imports no TensorFlow.
"""

import json
from pathlib import Path

from ..atomic import staged_dir
from ..bundle import sha256_file
from ..console import Progress, quiet
from ..paths import DEFAULT_MODEL_STEM, cache_dir
from ..reproducible import deterministic_keras_file, deterministic_zip

# v2: the saved files carry no date (reproducible.py) and metrics.json records their sha256.
VERSION = "digits-cnn-v2"  # bump when the data, the architecture or the training changes
MODEL_NAME = f"{DEFAULT_MODEL_STEM}.keras"
DATASET_NAME = "digits.npz"
METRICS_NAME = "metrics.json"
SEED = 1234
TEST_FRACTION = 0.25
EPOCHS = 10


def default_model(progress: Progress = quiet) -> tuple[Path, Path]:
    """(the .keras model, the .npz dataset with x_train, y_train, x_test, y_test), built on first use, and
    built again, saying so, when a file of the cached copy is missing or altered (metrics.json records
    their sha256)."""
    folder = cache_dir() / "default-model" / VERSION
    problem = _damage(folder)
    if problem:
        if folder.exists():
            progress(f"the cached default model is damaged ({problem}); building it again")
        _build(folder)
    return folder / MODEL_NAME, folder / DATASET_NAME


def _damage(folder: Path) -> str | None:
    """Why the cached copy in `folder` cannot be used; None when it is complete and intact."""
    try:
        recorded = json.loads((folder / METRICS_NAME).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{folder / METRICS_NAME} is missing or unreadable"
    for name in (MODEL_NAME, DATASET_NAME):
        path = folder / name
        if not path.is_file() or not isinstance(recorded, dict) or sha256_file(path) != recorded.get(name):
            return f"{path} is missing or does not match its sha256 in {METRICS_NAME}"
    return None


def _build(folder: Path) -> None:
    """Train into a temporary sibling folder that then replaces `folder` (incomplete when it exists: files
    deleted by hand): a killed build leaves nothing half-written."""
    try:
        with staged_dir(folder) as staging:
            _train(staging)
    except OSError:
        # Another process finished the same build first; its folder is as good as ours.
        if not (folder / METRICS_NAME).is_file():
            raise


def _train(folder: Path) -> None:
    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]  # [N, 8, 8, 1] in [0, 1]
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SEED
    )
    keras.utils.set_random_seed(SEED)
    # Same weights on every build with the same TensorFlow. This switch is process-wide; on the CPU
    # it costs nothing noticeable to later TensorFlow work in the same process.
    tf.config.experimental.enable_op_determinism()
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax", name="probabilities"),
        ],
        name="digits_cnn",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=EPOCHS, shuffle=True, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    model.save(folder / MODEL_NAME)
    deterministic_keras_file(folder / MODEL_NAME)
    np.savez(folder / DATASET_NAME, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    deterministic_zip(folder / DATASET_NAME)
    # Written last: its presence marks a complete build.
    (folder / METRICS_NAME).write_text(
        json.dumps(
            {
                "version": VERSION,
                "test_accuracy": round(float(accuracy), 4),
                "train_samples": len(x_train),
                "test_samples": len(x_test),
                "epochs": EPOCHS,
                "seed": SEED,
                "sha256": {name: sha256_file(folder / name) for name in (MODEL_NAME, DATASET_NAME)},
            },
            indent=2,
        )
        + "\n"
    )
