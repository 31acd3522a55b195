"""The one door for subprocesses: every tool edgeyard runs goes through run() (an argv list, never a
shell string). It prints nothing; a failure becomes one BuildError sentence that names the tool, its
exit status and the last lines it printed (errors.output_tail), a timeout says so, and a missing
program is MissingTool when the caller knows how to install it."""

import ctypes
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Sequence

from .errors import BuildError, MissingTool, output_tail

CompletedProcess = subprocess.CompletedProcess
_VERSION_TIMEOUT_S = 30  # a tool asked only for its version (a browser's first start is the slowest)
_PR_SET_PDEATHSIG = 1


class TimedOut(BuildError):
    """run() stopped the tool after timeout_s; `stdout` and `stderr` hold what it had printed by then."""

    def __init__(self, message: str, stdout, stderr):
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr


def run(argv: Sequence[str | Path], *, cwd: Path | str | None = None, env: dict[str, str] | None = None,
        timeout_s: float | None = None, what: str | None = None, input: str | bytes | None = None,
        check: bool = True, capture: bool = True, text: bool = True, install_hint: str | None = None,
        tail_lines: int = 3, log: Path | None = None, die_with_parent: bool = False) -> CompletedProcess:
    """Run `argv` (str() of each item) in `cwd` with `env` (None: this process's environment).

    capture: keep stdout and stderr in the result (else they go to this process's); `log`: write both
    into that file instead. check: raise BuildError when the exit status is not 0. timeout_s: kill the
    tool then and raise TimedOut. install_hint: a missing program raises MissingTool(name, hint).
    die_with_parent: the tool is killed when this process dies (Linux)."""
    command = [str(arg) for arg in argv]
    what = what or Path(command[0]).name
    options: dict = {"cwd": cwd, "env": env, "input": input, "text": text, "timeout": timeout_s}
    if die_with_parent:
        options["preexec_fn"] = _die_with_parent
    try:
        if log is not None:
            with open(log, "w" if text else "wb") as sink:
                result = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, **options)
        else:
            result = subprocess.run(command, capture_output=capture, **options)
    except subprocess.TimeoutExpired as expired:
        stdout, stderr = (_decoded(out) if text else out for out in (expired.stdout, expired.stderr))
        raise TimedOut(f"{what} did not finish within {timeout_s:g} s.", stdout, stderr) from None
    except FileNotFoundError as err:
        if cwd is not None and str(err.filename) == str(cwd):
            raise BuildError(f"{what} could not start: the folder {cwd} does not exist.") from None
        if install_hint is not None:
            raise MissingTool(Path(command[0]).name, install_hint) from None
        raise BuildError(f"{what} could not start: {command[0]} was not found.") from None
    except OSError as err:  # not executable, not a program, ...
        raise BuildError(f"{what} could not start: {err.strerror or err}.") from None
    if check and result.returncode != 0:
        raise failure(result, what, tail_lines, log)
    return result


def failure(result: CompletedProcess, what: str, tail_lines: int = 3, log: Path | None = None) -> BuildError:
    """The one-sentence error for a tool that exited with a non-zero status (for callers that check
    the status themselves, e.g. to tell one status apart first)."""
    if log is not None:
        return BuildError(f"{what} failed with exit status {result.returncode}; see {log}.")
    tail = output_tail(_decoded(result.stdout), _decoded(result.stderr), tail_lines).rstrip(".")
    return BuildError(f"{what} failed with exit status {result.returncode}: {tail}.")


def require(program: str, hint: str) -> str:
    """The path of `program` on PATH, or MissingTool(program, hint)."""
    found = shutil.which(program)
    if found is None:
        raise MissingTool(program, hint)
    return found


def version(path: Path | str, flag: str = "--version") -> str:
    """The first line of `path --version` (or `path FLAG`), e.g. "aarch64-linux-gnu-g++ (Debian 12.2.0-14) 12.2.0"."""
    result = run([path, flag], check=False, timeout_s=_VERSION_TIMEOUT_S)
    lines = (result.stdout or result.stderr).splitlines()
    return lines[0].strip() if lines else "unknown"


def _decoded(output) -> str | None:
    return output.decode(errors="replace") if isinstance(output, bytes) else output


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the parent dies (e.g. killed on a caller's timeout)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
