"""Native libraries (and headers) taken from another architecture's manylinux wheels: what a bundle for a board
ships, fetched once with pip download (no dependencies, nothing installed) and unpacked into the cache.
"""

import sys
import zipfile
from pathlib import Path

from .. import proc
from ..atomic import atomic_file

# Architectures whose wheels can be fetched: the pip platform tag of their manylinux wheels.
PLATFORMS = {"aarch64": "manylinux_2_28_aarch64"}
# The wheels are picked for this interpreter tag; only their native files are used.
_PYTHON = "3.11"


def download(requirement: str, platform_tag: str, dest: Path) -> None:
    argv = [
        sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
        "--platform", platform_tag, "--python-version", _PYTHON, "--implementation", "cp",
        "--dest", str(dest), requirement,
    ]  # fmt: skip
    proc.run(argv, what=f"pip download of the {platform_tag} wheel of {requirement}", tail_lines=5)


def find(download_dir: Path, dist: str) -> Path:
    """The downloaded wheel of `dist`: wheel file names use the normalized name (apache_tvm-..., executorch-...)."""
    prefix = dist.replace("-", "_") + "-"
    return next(p for p in download_dir.glob("*.whl") if p.name.startswith(prefix))


def extract(wheel: Path, member: str, dest: Path, mode: int = 0o755) -> None:
    """One file of `wheel` to `dest`, atomically: a reader never sees half a library."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(dest) as partial:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(partial, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        partial.chmod(mode)
