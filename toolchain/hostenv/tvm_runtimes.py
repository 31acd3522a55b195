"""TVM runtime libraries for a target architecture, and the headers native code compiles against.

A bundle carries libtvm_runtime.so and libtvm_ffi.so built for its board. For this machine's own
architecture they come from the installed pip packages; for another (aarch64) they come from the
manylinux wheels of the *same* apache-tvm and apache-tvm-ffi versions, fetched once into the cache:

    python -m toolchain.hostenv tvm-runtime aarch64
"""

import importlib.metadata
import importlib.util
import json
import platform
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import BadInput, MissingTool
from ..paths import cache_dir
from . import wheels
from .tools import Tool

# Distribution -> the runtime library inside its wheel (same path in the installed package).
RUNTIME_LIBS = {
    "apache-tvm": "tvm/lib/libtvm_runtime.so",
    "apache-tvm-ffi": "tvm_ffi/lib/libtvm_ffi.so",
}
_VERSIONS_FILE = "versions.json"


def installed_versions() -> dict[str, str]:
    """Versions of the installed TVM distributions, which fetched runtimes must match."""
    return {dist: importlib.metadata.version(dist) for dist in RUNTIME_LIBS}


def _installed_package_dir(package: str) -> Path:
    # find_spec locates the package without importing it (importing tvm takes over a second).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingTool(f"the Python package {package}", "run ./bootstrap.sh.")
    return Path(next(iter(spec.submodule_search_locations)))


def _runtimes_dir(arch: str) -> Path:
    return cache_dir() / "runtimes" / arch


def _link_host_runtime(arch_dir: Path) -> None:
    """Point arch_dir's libraries at the installed packages' (the two live in different folders)."""
    arch_dir.mkdir(parents=True, exist_ok=True)
    for member in RUNTIME_LIBS.values():
        package, *rest = member.split("/")
        installed = _installed_package_dir(package).joinpath(*rest)
        if not installed.is_file():
            raise MissingTool(str(installed), "run ./bootstrap.sh.")
        link = arch_dir / installed.name
        if link.is_symlink() and link.readlink() == installed:
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(installed)


def _fetched_is_current(arch_dir: Path) -> bool:
    stamp = arch_dir / _VERSIONS_FILE
    if not stamp.is_file() or json.loads(stamp.read_text()) != installed_versions():
        return False
    return all((arch_dir / Path(member).name).is_file() for member in RUNTIME_LIBS.values())


def tvm_runtime_dir(arch: str) -> Path:
    """A folder holding libtvm_runtime.so and libtvm_ffi.so for `arch` ("x86_64", "aarch64")."""
    arch_dir = _runtimes_dir(arch)
    if arch == platform.machine():
        _link_host_runtime(arch_dir)
        return arch_dir
    if arch not in wheels.PLATFORMS:
        raise BadInput(f"no TVM runtime is available for architecture '{arch}' (known: {', '.join(wheels.PLATFORMS)}).")
    if not _fetched_is_current(arch_dir):
        raise MissingTool(f"the {arch} TVM runtime for apache-tvm {installed_versions()['apache-tvm']}", "run ./bootstrap.sh.")
    return arch_dir


def tool(arch: str) -> Tool:
    """tvm_runtime_dir(arch) as a Tool, reporting the apache-tvm version its libraries are from."""
    return Tool(f"the {arch} TVM runtime", "libtvm_runtime.so and libtvm_ffi.so in the bundle",
                lambda: f"apache-tvm {installed_versions()['apache-tvm']} in {tvm_runtime_dir(arch)}")


def fetch(arch: str, progress: Callable[[str], None]) -> Path:
    """Download the `arch` wheels of the installed TVM versions and extract their runtime libraries.

    Idempotent: when the libraries for these versions are already there it only says so.
    """
    if arch == platform.machine():
        progress(f"the {arch} TVM runtime is the installed one; nothing to fetch")
        return tvm_runtime_dir(arch)
    if arch not in wheels.PLATFORMS:
        raise BadInput(f"cannot fetch a TVM runtime for architecture '{arch}' (known: {', '.join(wheels.PLATFORMS)}).")
    arch_dir = _runtimes_dir(arch)
    versions = installed_versions()
    if _fetched_is_current(arch_dir):
        progress(f"the {arch} TVM runtime is present in {arch_dir}")
        return arch_dir
    arch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeyard-wheels-") as download_dir:
        for dist, version in versions.items():
            progress(f"downloading the {wheels.PLATFORMS[arch]} wheel of {dist}=={version}")
            wheels.download(f"{dist}=={version}", wheels.PLATFORMS[arch], Path(download_dir))
        for dist, member in RUNTIME_LIBS.items():
            wheel = wheels.find(Path(download_dir), dist)
            library = arch_dir / Path(member).name
            progress(f"extracting {member} from {wheel.name} to {library}")
            wheels.extract(wheel, member, library)
    (arch_dir / _VERSIONS_FILE).write_text(json.dumps(versions, indent=2) + "\n")
    return arch_dir


def tvm_ffi_include_dirs() -> list[Path]:
    """Include folders for code built against the TVM FFI: tvm/ffi/*.h and dlpack/dlpack.h."""
    root = _installed_package_dir("tvm_ffi")
    include = root / "include"
    if not (include / "tvm" / "ffi").is_dir():
        raise MissingTool("the apache-tvm-ffi headers", "run ./bootstrap.sh.")
    if (include / "dlpack").is_dir():
        return [include]
    return [include, root / "3rdparty" / "dlpack" / "include"]
