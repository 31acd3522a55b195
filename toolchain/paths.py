"""Where things live: the project tree, the user's cache, the fetched target runtimes."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = PROJECT_ROOT / "templates"
TARGETS_DIR = PROJECT_ROOT / "targets"


def cache_dir() -> Path:
    """The user's cache folder for edgeyard (default model, target runtimes): $EDGEYARD_CACHE or XDG."""
    root = os.environ.get("EDGEYARD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgeyard"
    )
    return Path(root)


DEFAULT_MODEL_STEM = "digits_cnn"  # the embedded default model's file stem (toolchain/model/default.py)


def build_dir_for(target: str, model: str | None, backend: str, out: str | None) -> Path:
    """The folder a build with these options writes to: --out, else build/<target>/<model-stem>/<backend>/."""
    if out:
        return Path(out)
    stem = Path(model).name.split(".")[0] if model else DEFAULT_MODEL_STEM
    return Path("build") / target / stem / backend
