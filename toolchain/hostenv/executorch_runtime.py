"""ExecuTorch's C++ runtime for a board's architecture: the libraries the executorch bundle's runner links and
ships, and the headers it compiles against.

The executorch wheel carries both (executorch/lib, executorch/include) without any torch dependency: only its
Python bindings link libtorch. For this machine's architecture they are the installed package's; for another
(aarch64) they come from the manylinux wheel of the *same* executorch version (pip download --no-deps, so no
torch comes), unpacked once into the cache:

    python -m toolchain.hostenv executorch-runtime aarch64
"""

import importlib.util
import json
import platform
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from ..atomic import staged_dir
from ..errors import BadInput, MissingTool
from ..paths import cache_dir
from . import wheels
from .tools import Tool

DIST = "executorch"
# What the runner needs: the runtime (Program, Method, the Module extension, data loaders), the thread pool
# XNNPACK runs on, the XNNPACK delegate and the optimized CPU kernels (with the portable ones) for the ops
# outside the delegate. The delegate and the kernels register themselves when loaded.
LIBRARIES = ("libexecutorch.so", "libexecutorch_threadpool.so", "libexecutorch_backend_xnnpack.so",
             "libexecutorch_kernels_optimized.so")
# What its CMake config (lib/cmake/executorch) has consumers compile with: the vendored c10 headers need the
# first, and the libraries are built with the second (classes change layout without it).
DEFINES = ("C10_USING_CUSTOM_GENERATED_MACROS", "ET_EVENT_TRACER_ENABLED")
_C10_INCLUDE = "executorch/runtime/core/portable_type/c10"
_VERSIONS_FILE = "versions.json"
_INSTALL_HINT = "install it with: .venv/bin/pip install -e '.[executorch]', or run ./bootstrap.sh."


@dataclass(frozen=True)
class Runtime:
    arch: str
    root: Path  # holds lib/ and include/, as the wheel's executorch/ package does
    version: str

    @property
    def lib_dir(self) -> Path:
        return self.root / "lib"

    @property
    def include_dirs(self) -> list[Path]:
        return [self.root / "include", self.root / "include" / _C10_INCLUDE]

    @property
    def libraries(self) -> list[Path]:
        return [self.lib_dir / name for name in LIBRARIES]


def installed_version() -> str:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        raise MissingTool(DIST, _INSTALL_HINT) from None


def _fetched_dir(arch: str) -> Path:
    return cache_dir() / "runtimes" / arch / DIST


def _is_complete(runtime: Runtime) -> bool:
    return all(path.is_file() for path in runtime.libraries) and all(path.is_dir() for path in runtime.include_dirs)


def _fetched(arch: str) -> Runtime | None:
    """The fetched runtime for `arch` when it is there and of the installed executorch version."""
    root = _fetched_dir(arch)
    stamp = root / _VERSIONS_FILE
    version = installed_version()
    if not stamp.is_file() or json.loads(stamp.read_text()) != {DIST: version}:
        return None
    runtime = Runtime(arch, root, version)
    return runtime if _is_complete(runtime) else None


def runtime(arch: str) -> Runtime:
    """The ExecuTorch runtime for `arch` ("x86_64", "aarch64"); MissingTool when it is not installed or fetched."""
    version = installed_version()
    if arch == platform.machine():
        # find_spec locates the package without importing it (importing executorch takes seconds).
        spec = importlib.util.find_spec(DIST)
        found = Runtime(arch, Path(next(iter(spec.submodule_search_locations))), version) if spec else None
        if found is None or not _is_complete(found):
            raise MissingTool(f"ExecuTorch's C++ runtime (the {DIST} package's lib/ and include/)", _INSTALL_HINT)
        return found
    if arch not in wheels.PLATFORMS:
        raise BadInput(f"no ExecuTorch runtime is available for architecture '{arch}' "
                       f"(known: {', '.join(sorted({*wheels.PLATFORMS, platform.machine()}))}).")
    found = _fetched(arch)
    if found is None:
        raise MissingTool(f"the {arch} ExecuTorch runtime for {DIST} {version}",
                          f"fetch it with: python -m toolchain.hostenv executorch-runtime {arch}, or run ./bootstrap.sh.")
    return found


def tool(arch: str) -> Tool:
    """runtime(arch) as a Tool, reporting the executorch version its libraries are from."""
    def locate() -> str:
        found = runtime(arch)
        return f"{DIST} {found.version} in {found.root}"

    return Tool(f"the {arch} ExecuTorch runtime", "libexecutorch and its XNNPACK delegate in the bundle", locate)


def fetch(arch: str, progress: Callable[[str], None]) -> Runtime:
    """Download the `arch` wheel of the installed executorch version and unpack its libraries and headers.

    Idempotent: when they are already there for this version it only says so.
    """
    if arch == platform.machine():
        progress(f"the {arch} ExecuTorch runtime is the installed package's; nothing to fetch")
        return runtime(arch)
    if arch not in wheels.PLATFORMS:
        raise BadInput(f"cannot fetch an ExecuTorch runtime for architecture '{arch}' "
                       f"(known: {', '.join(wheels.PLATFORMS)}).")
    version = installed_version()
    present = _fetched(arch)
    if present is not None:
        progress(f"the {arch} ExecuTorch runtime is present in {present.root}")
        return present
    with tempfile.TemporaryDirectory(prefix="edgeyard-wheels-") as download_dir, \
            staged_dir(_fetched_dir(arch)) as stage:
        progress(f"downloading the {wheels.PLATFORMS[arch]} wheel of {DIST}=={version} (without dependencies)")
        wheels.download(f"{DIST}=={version}", wheels.PLATFORMS[arch], Path(download_dir))
        wheel = wheels.find(Path(download_dir), DIST)
        with zipfile.ZipFile(wheel) as archive:
            headers = [name for name in archive.namelist()
                       if name.startswith(f"{DIST}/include/") and not name.endswith("/")]
        progress(f"extracting {len(LIBRARIES)} libraries and {len(headers)} headers from {wheel.name}")
        for member in [f"{DIST}/lib/{name}" for name in LIBRARIES]:
            wheels.extract(wheel, member, stage / member.removeprefix(f"{DIST}/"))
        for member in headers:
            wheels.extract(wheel, member, stage / member.removeprefix(f"{DIST}/"), mode=0o644)
        (stage / _VERSIONS_FILE).write_text(json.dumps({DIST: version}, indent=2) + "\n")
    return runtime(arch)
