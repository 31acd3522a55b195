"""Text for humans: tables, progress lines, and the mapping of errors to exit codes for the CLI."""

import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .errors import EXIT_BUILD_FAILED, EdgeyardError, reason


# What must not reach a terminal raw: C0/C1 controls (escape sequences start with ESC), DEL, and the
# Unicode line separators and bidirectional overrides that reorder what a reader sees.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control character but newline and tab written as an escape (\\x1b), so that a name
    from a model or a file cannot move the cursor, recolour or rewrite a terminal."""
    return _CONTROL.sub(lambda match: match[0].encode("unicode_escape").decode(), text)


def one_line(text: str) -> str:
    """printable(), on one line: newlines and tabs written as escapes too (an error message, a table cell)."""
    return printable(text.replace("\n", "\\n").replace("\t", "\\t"))


def markdown_cell(value) -> str:
    """A value as Markdown text that stays in its table cell or list item: one_line(), '|' escaped."""
    return re.sub(r"(?<!\\)\|", r"\\|", one_line(str(value)))


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


Progress = Callable[[str], None]  # how every stage reports a step: a callable taking one line


def quiet(_: str) -> None:
    """The Progress of callers that want no lines (the API's default)."""


class Count(str):
    """A progress line that is also a count (builds done of a total): a plain Progress prints it as the line it
    is; ProgressPrinter on a terminal draws it as a bar with the elapsed time and an estimate of the rest."""

    def __new__(cls, message: str, done: int, total: int):
        line = super().__new__(cls, message)
        line.done, line.total = done, total
        return line


class ProgressPrinter:
    """Prints each step as it starts, with the time since the command began (stdout: stderr is for errors).

    On a terminal the current step is a tqdm status line (its elapsed time ticking; a Count is a bar with
    the estimate of the time left); tqdm rather than rich because it is small, already installed with
    LiteRT, and prints the text as given (rich reads [brackets] in a model's name as markup). Not on a
    terminal (CI logs, files), each step is one plain line with no control characters."""

    REFRESH_S = 0.5

    def __init__(self, stream=sys.stdout, terminal: bool | None = None):
        self.start = time.monotonic()
        self.stream = stream
        self.terminal = stream.isatty() if terminal is None else terminal
        self._bar = None
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.start:6.1f}s]"

    def __call__(self, message: str) -> None:
        text = one_line(message)
        if not self.terminal:
            counted = f" ({_eta(message, time.monotonic() - self.start)})" if isinstance(message, Count) else ""
            print(f"{self._stamp()} {text}{counted}", file=self.stream, flush=True)
            return
        from tqdm import tqdm

        with self._lock:
            counted = isinstance(message, Count)
            if self._bar is not None and not (counted and self._bar.total == message.total):
                self._bar.close()
                self._bar = None
            if self._bar is None:
                form = ("{desc} {bar:20} {n_fmt}/{total_fmt} [{elapsed}<{remaining}]" if counted
                        else "{desc} {elapsed}")
                self._bar = tqdm(total=message.total if counted else None, file=self.stream, bar_format=form,
                                 dynamic_ncols=True, leave=True)
            self._bar.set_description_str(f"{self._stamp()} {text}", refresh=False)
            if counted:
                self._bar.update(message.done - self._bar.n)
            self._bar.refresh()
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        """Keep the current step's elapsed time moving while a long step (a compilation) says nothing."""
        while True:
            time.sleep(self.REFRESH_S)
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()

    def close(self) -> None:
        """End the last status line (before the command's own output)."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def _eta(count: Count, elapsed: float) -> str:
    left = elapsed / count.done * (count.total - count.done) if count.done else None
    return f"{count.done}/{count.total}, {elapsed:.0f} s elapsed" + (f", about {left:.0f} s left" if left else "")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it unwinds like Ctrl-C: staging folders removed."""


def _terminate(signum, frame):
    raise Terminated()


def guarded(action: Callable[[], object], debug: bool) -> tuple[object, int, str]:
    """Run action; return (result, exit code, one-sentence error). Tracebacks only when debug.
    SIGTERM during the action unwinds it like Ctrl-C (exit 143 instead of 130)."""
    main = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread
    previous = signal.signal(signal.SIGTERM, _terminate) if main else None
    try:
        return action(), 0, ""
    except EdgeyardError as err:
        if debug:
            traceback.print_exc()
        return None, err.exit_code, f"error: {one_line(str(err))}"
    except Terminated:
        return None, 128 + signal.SIGTERM, "terminated"
    except KeyboardInterrupt:
        return None, 130, "interrupted"
    except OSError as err:  # the machine's refusal (a full disk, permissions): the file and the reason
        if debug:
            traceback.print_exc()
        where = f"{err.filename}: " if err.filename else ""
        return None, EXIT_BUILD_FAILED, one_line(f"error: {where}{err.strerror or reason(err)}.")
    except Exception as err:  # an edgeyard bug: say so in one line, keep the trace for --debug
        if debug:
            traceback.print_exc()
        return None, EXIT_BUILD_FAILED, one_line(f"internal error: {type(err).__name__}: {reason(err)} "
                                                 "(run again with --debug for the traceback)")
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


THIRD_PARTY_LOG = "third-party.log"
_LOG_PREFIX = "edgeyard-third-party-"  # + pid + ".log", in the system's temp folder while a command runs


class FrameworkOutput:
    """Where the libraries' own output went during a command: `path` (None with --verbose: the terminal)."""

    def __init__(self, path: Path | None):
        self.path = path

    def keep(self, folder: Path) -> Path | None:
        """Move the log into `folder` (a build folder) as third-party.log; its path, or None when there is none."""
        if self.path is None or not self.path.is_file() or not folder.is_dir():
            return None
        import shutil

        return Path(shutil.move(self.path, folder / THIRD_PARTY_LOG))  # the temp folder may be another file system


@contextmanager
def framework_output(verbose: bool):
    """During the block, what TensorFlow, absl, LiteRT's XNNPACK notice, ONNX Runtime's logger and Python
    warnings write to the process's stderr (file descriptor 2, also what child processes inherit) goes to a
    log file instead of the terminal: <system temp>/edgeyard-third-party-<pid>.log, which keep() moves into
    the build folder inside the block; a log not kept is removed at its end (a failed build leaves no folder:
    --verbose shows the libraries' output), and the logs of processes that were killed are removed at the start.
    With verbose, nothing changes. Their errors still reach the user: edgeyard turns them into its one-sentence
    message, printed after the block."""
    if verbose:
        yield FrameworkOutput(None)
        return
    temp = Path(tempfile.gettempdir())
    _remove_logs_of_dead_processes(temp)
    path = temp / f"{_LOG_PREFIX}{os.getpid()}.log"
    sys.stderr.flush()
    saved = os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.dup2(log, 2)
        yield FrameworkOutput(path)
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(log)
        path.unlink(missing_ok=True)


def _remove_logs_of_dead_processes(temp: Path) -> None:
    """The framework logs a killed edgeyard left in `temp` (SIGKILL runs no clean-up): their pid runs no more."""
    for stale in temp.glob(f"{_LOG_PREFIX}*.log"):
        pid = stale.name[len(_LOG_PREFIX):-len(".log")]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass


def quiet_frameworks() -> None:
    """For the command line: keep TensorFlow's start-up chatter (oneDNN, CUDA probing) and converters'
    deprecation notes off the console, where they would bury the one-line errors; stop ONNX Runtime
    1.32's telemetry uploader (a thread, a store under ~/.cache/Microsoft, network lookups)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    for name in ("absl", "tf2onnx", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
