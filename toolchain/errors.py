"""One error type with stable exit codes (like tvmc): the CLI maps `exit_code` to the process status."""

EXIT_OK = 0
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
