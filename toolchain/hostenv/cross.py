"""Find, version and drive the compilers a target needs (argv lists, never a shell string)."""

import hashlib
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .. import proc
from ..atomic import atomic_file
from ..errors import MissingTool
from ..paths import FIRMWARE_DIR, cache_dir
from ..target.profile import Target
from .tools import Tool

# Debian packages that hold a tool, when it is not named after the tool itself.
_BINUTILS = frozenset({"ar", "as", "ld", "nm", "objcopy", "objdump", "readelf", "size", "strip"})

# Flags for the C edgeyard generates and for firmware/, on every target (with the target's CPU flags).
C_FLAGS = ("-O2", "-g", "-std=gnu11", "-ffunction-sections", "-fdata-sections")

# Lines of a failing tool's stderr quoted in the error: enough for a compiler's first error.
_STDERR_TAIL_LINES = 20


def c_flags(src: Path, work: Path) -> list[str]:
    """C_FLAGS for compiling in `work` the sources generated in `src`, with -ffile-prefix-map so that no object
    holds a path of this machine (debug info, __FILE__): a build is byte-identical wherever it runs. The
    generated sources are recorded under their folder's name in the bundle, firmware/ as "firmware", the
    work folder as ".". gcc records the working folder resolved (getcwd), arguments as given: both are mapped."""
    folders = {}
    for folder, name in ((work, "."), (FIRMWARE_DIR, "firmware"), (src, src.name)):
        folders.update({str(folder.absolute()): name, str(folder.resolve()): name})
    # gcc applies the last matching map: the longest (the most specific) last.
    return [*C_FLAGS, *(f"-ffile-prefix-map={folder}={folders[folder]}" for folder in sorted(folders, key=len))]


def _debian_package(tool: str, cross_prefix: str) -> str:
    package = "binutils" if tool in _BINUTILS else tool
    return f"{package}-{cross_prefix.rstrip('-')}" if cross_prefix else package


def find_program(cross_prefix: str, tool: str) -> Path:
    """The path of `<cross_prefix><tool>` on PATH ("" : this machine's own tool); MissingTool naming its package."""
    name = cross_prefix + tool
    found = shutil.which(name)
    if found is None:
        package = _debian_package(tool, cross_prefix)
        raise MissingTool(name, f"install it with: apt-get install {package}, or run ./bootstrap.sh.")
    return Path(found)


def find_tool(target: Target, tool: str) -> Path:
    """The path of `tool` ("g++", "gcc", "objcopy", ...) for `target`: `<cross_prefix><tool>` on PATH."""
    return find_program(target.cross_prefix, tool)


def tool(cross_prefix: str, name: str, purpose: str) -> Tool:
    """find_program(cross_prefix, name) as a Tool that reports the compiler's version."""
    return Tool(cross_prefix + name, purpose, lambda: proc.version(find_program(cross_prefix, name)))


def compiler_versions(compilers: frozenset[str]) -> dict[str, str]:
    """The installed version of each named compiler (e.g. arm-none-eabi-gcc), "not installed" for a missing one:
    what a backend's versions() records for the targets it serves, into the report and the cache key."""
    return {name: _version_of(name) for name in sorted(compilers)}


@lru_cache(maxsize=None)
def _version_of(name: str) -> str:
    path = shutil.which(name)
    return proc.version(path) if path else "not installed"


def run_tool(argv: list[str | Path], cwd: Path) -> proc.CompletedProcess:
    """Run a compiler or binutil in `cwd` (proc.run); on failure BuildError quoting the end of its stderr."""
    return proc.run(argv, cwd=cwd, install_hint="run ./bootstrap.sh.", tail_lines=_STDERR_TAIL_LINES)


def cached_program(kind: str, arch: str, compile_argv: Callable[[Path], list], progress: Callable[[str], None],
                   depends_on: str = "") -> Path:
    """A program that does not depend on the model (a runner of firmware/), compiled once into the user's cache.

    compile_argv(output) is the compiler's argv writing `output`: it names the compiler and the sources, whose bytes
    (and those of the headers beside them), with the compiler's version, the argv itself and `depends_on` (the
    version of the libraries it is built against), make the cache key; a changed one compiles it again."""
    argv = [str(arg) for arg in compile_argv(Path("OUTPUT"))]
    key = hashlib.sha256(repr([argv, proc.version(argv[0]), depends_on]).encode())
    for source in [Path(arg) for arg in argv if Path(arg).suffix in (".c", ".cpp") and Path(arg).is_file()]:
        for path in [source, *sorted(source.parent.glob("*.h"))]:
            key.update(path.read_bytes())
    program = cache_dir() / kind / f"{arch}-{key.hexdigest()[:16]}"
    if not program.is_file():
        progress(f"compiling {kind} for {arch} with {Path(argv[0]).name} (once: it is kept in the cache)")
        with atomic_file(program) as partial:
            run_tool(compile_argv(partial), cwd=partial.parent)
    return program
