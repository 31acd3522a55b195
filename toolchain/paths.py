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


def default_build_dir(target: str, model_stem: str, backend: str) -> Path:
    return Path("build") / target / model_stem / backend
