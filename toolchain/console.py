"""Text for humans: tables, progress lines, and the mapping of errors to exit codes for the CLI."""

import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
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


class ProgressPrinter:
    """Prints each step as it starts, with the time since the command began (stdout: stderr is for errors)."""

    def __init__(self, stream=sys.stdout):
        self.start = time.monotonic()
        self.stream = stream

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {printable(message)}", file=self.stream, flush=True)


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


def quiet_frameworks() -> None:
    """For the command line: keep TensorFlow's start-up chatter (oneDNN, CUDA probing) and converters'
    deprecation notes off the console, where they would bury the one-line errors; stop ONNX Runtime
    1.32's telemetry uploader (a thread, a store under ~/.cache/Microsoft, network lookups)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    for name in ("absl", "tf2onnx", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
