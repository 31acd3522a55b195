"""One error type with stable exit codes (like tvmc): the CLI maps `exit_code` to the process status."""

import re
from pathlib import Path

EXIT_BUILD_FAILED = 1  # build or validation failure
EXIT_BAD_INPUT = 2  # bad model, target or option
EXIT_MISSING_TOOL = 3  # a tool or toolchain is not installed


class EdgeyardError(Exception):
    """A failure a user can act on: `str(err)` is one clear sentence, `exit_code` is stable."""

    exit_code = EXIT_BUILD_FAILED

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BuildError(EdgeyardError):
    exit_code = EXIT_BUILD_FAILED


class BadInput(EdgeyardError):
    exit_code = EXIT_BAD_INPUT


class MissingTool(EdgeyardError):
    exit_code = EXIT_MISSING_TOOL

    def __init__(self, tool: str, hint: str):
        super().__init__(f"{tool} is not installed; {hint}")
        self.tool = tool
        self.hint = hint


def reason(err: Exception) -> str:
    """A third-party exception as a clause for one of our one-sentence errors: the first non-empty line
    of its message (frameworks append pages of context), without a final period."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0][:300] if lines else type(err).__name__).rstrip(".")


def short_reason(message: str, model_path) -> str:
    """An error message as a clause about a model already named: without its path (given whole or as the file's
    name, as tables name models), hint and final period."""
    name = re.escape(Path(str(model_path)).name)
    text = message.replace(f"{model_path}: ", "") if "/" in str(model_path) else message  # a path may hold spaces
    text = re.sub(rf"(?:\S*/)?{name}: ", "", text)
    return text.split("; try --backend")[0].rstrip(".")


def output_tail(stdout: str | None, stderr: str | None, lines: int = 3, joiner: str = " | ") -> str:
    """The last lines a failed tool printed (stderr, else stdout), for the one sentence that reports it."""
    text = (stderr or "").strip() or (stdout or "").strip()
    return joiner.join(text.splitlines()[-lines:]) or "no output"
