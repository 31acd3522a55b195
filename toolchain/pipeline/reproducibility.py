"""invoke build --check-reproducible: build the same inputs twice, in two folders with two cache folders, at
two times, and name the files that differ (docs/trust.md#reproducible-builds)."""

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..bundle import BUNDLE
from ..console import Progress, quiet
from ..errors import BuildError
from ..options import BuildOptions
from ..paths import cache_dir
from ..signing import PROVENANCE, SIGNATURE
from .build import build

# The cache entries that are inputs of a build, copied into the second build's cache (at another path);
# every other entry (target runtimes, the emulated userland, the qemu plug-in) is an installed tool, shared.
_CACHED_INPUTS = ("default-model",)


@dataclass
class Reproducibility:
    first: Path  # the build folder
    compared: list[str]  # the files found byte-identical in both builds, relative to the build folder


def compared_files(out_dir: Path) -> list[str]:
    """The files of a build folder that must be identical between builds of the same inputs: the bundle, the
    provenance and the signature. report.json and report.md record the build's duration, folder and timings,
    so they differ by design."""
    files = [path.relative_to(out_dir).as_posix() for path in (out_dir / BUNDLE).rglob("*") if path.is_file()]
    return sorted([*files, *(name for name in (PROVENANCE, SIGNATURE) if (out_dir / name).is_file())])


def differing_files(first: Path, second: Path) -> tuple[list[str], list[str]]:
    """(every file compared, those that differ or exist in one build folder only)."""
    names = sorted(set(compared_files(first)) | set(compared_files(second)))
    differing = [name for name in names if not ((first / name).is_file() and (second / name).is_file()
                                                and (first / name).read_bytes() == (second / name).read_bytes())]
    return names, differing


@contextlib.contextmanager
def _cache_folder(folder: Path):
    """EDGEYARD_CACHE set to `folder` for the block, holding copies of the cached inputs and links to the tools."""
    original = cache_dir()
    folder.mkdir(parents=True)
    for entry in sorted(original.iterdir()) if original.is_dir() else []:
        if entry.name in _CACHED_INPUTS:
            shutil.copytree(entry, folder / entry.name)
        else:
            (folder / entry.name).symlink_to(entry.absolute())
    previous = os.environ.get("EDGEYARD_CACHE")
    os.environ["EDGEYARD_CACHE"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["EDGEYARD_CACHE"]
        else:
            os.environ["EDGEYARD_CACHE"] = previous


def check_reproducible(opts: BuildOptions, progress: Progress = quiet) -> Reproducibility:
    """Build `opts` (a cache hit reuses the earlier build), then again in a scratch folder with a scratch cache;
    BuildError naming the files that differ (the second build is then kept, for a diff)."""
    first = build(opts, progress).out_dir
    scratch = Path(tempfile.mkdtemp(prefix="edgeyard-reproducible-"))
    try:
        with _cache_folder(scratch / "cache"):
            progress(f"building again in {scratch} with another cache folder, to compare")
            second = build(replace(opts, out=scratch / "build" / first.name), progress).out_dir
        compared, differing = differing_files(first, second)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if differing:
        raise BuildError(f"{len(differing)} of {len(compared)} files differ between two builds of the same inputs "
                         f"({first} and {second}): {', '.join(differing)}.")
    shutil.rmtree(scratch, ignore_errors=True)
    return Reproducibility(first, compared)
