"""Find, version and drive the compilers a target needs (argv lists, never a shell string)."""

import shutil
import subprocess
from pathlib import Path

from ..errors import BuildError, MissingTool
from ..target.profile import Target

# Debian packages that hold a tool, when it is not named after the tool itself.
_BINUTILS = frozenset({"ar", "as", "ld", "nm", "objcopy", "objdump", "readelf", "size", "strip"})

# Lines of a failing tool's stderr quoted in the error: enough for a compiler's first error.
_STDERR_TAIL_LINES = 20


def _debian_package(tool: str, cross_prefix: str) -> str:
    package = "binutils" if tool in _BINUTILS else tool
    return f"{package}-{cross_prefix.rstrip('-')}" if cross_prefix else package


def find_tool(target: Target, tool: str) -> Path:
    """The path of `tool` ("g++", "gcc", "objcopy", ...) for `target`: `<cross_prefix><tool>` on PATH."""
    name = target.cross_prefix + tool
    found = shutil.which(name)
    if found is None:
        package = _debian_package(tool, target.cross_prefix)
        raise MissingTool(name, f"install it with: apt-get install {package}, or run ./bootstrap.sh.")
    return Path(found)


def tool_version(path: Path | str) -> str:
    """The first line of `path --version`, e.g. "aarch64-linux-gnu-g++ (Debian 12.2.0-14) 12.2.0"."""
    result = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False)
    lines = (result.stdout or result.stderr).splitlines()
    return lines[0].strip() if lines else "unknown"


def run_tool(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess:
    """Run a tool in `cwd`; on failure raise BuildError quoting the end of its stderr."""
    command = [str(arg) for arg in argv]
    tool = Path(command[0]).name
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise MissingTool(tool, "run ./bootstrap.sh.") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-_STDERR_TAIL_LINES:])
        raise BuildError(f"{tool} failed with exit status {result.returncode}:\n{tail}")
    return result
