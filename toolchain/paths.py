"""Where things live: the assets (templates/, targets/, firmware/), the user's cache, build folders."""

import os
from pathlib import Path

from .errors import BadInput

PACKAGE_DIR = Path(__file__).resolve().parent
# A source checkout (or an editable install) keeps the assets beside the package; a built wheel
# carries them inside it, in toolchain/_assets/ (setup.py copies them there).
ASSETS_ROOT = PACKAGE_DIR / "_assets" if (PACKAGE_DIR / "_assets").is_dir() else PACKAGE_DIR.parent
TEMPLATES_DIR = ASSETS_ROOT / "templates"
TARGETS_DIR = ASSETS_ROOT / "targets"
FIRMWARE_DIR = ASSETS_ROOT / "firmware"


def cache_dir() -> Path:
    """The user's cache folder for edgeyard (default model, target runtimes): $EDGEYARD_CACHE or XDG."""
    root = Path(os.environ.get("EDGEYARD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgeyard"
    ))
    if root.exists() and not root.is_dir():
        raise BadInput(f"{root}: the cache folder (EDGEYARD_CACHE or XDG_CACHE_HOME) is a file, not a folder.")
    return root


DEFAULT_MODEL_STEM = "digits_cnn"  # the embedded default model's file stem (toolchain/model/default.py)


def build_dir_for(target: str, model: str | None, backend: str, out: str | None) -> Path:
    """The folder a build with these options writes to: --out, else build/<target>/<model-stem>/<backend>/."""
    if out:
        return Path(out)
    stem = Path(model).name.split(".")[0] if model else DEFAULT_MODEL_STEM
    return Path("build") / target / stem / backend
