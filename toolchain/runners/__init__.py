"""Runner registry: each module in this package registers one runner on import."""

from ..registry import Registry
from .base import (
    Connection,
    InstructionCount,
    Runner,
    RunnerCaps,
    RunRequest,
    RunResult,
    check_caps,
    run_bundle,
)

RUNNERS: Registry[Runner] = Registry("runner", __name__)


def register(runner: Runner) -> Runner:
    """Add a runner once its caps are checked against what it implements."""
    return RUNNERS.register(check_caps(runner))


names = RUNNERS.names
get = RUNNERS.get

__all__ = ["RUNNERS", "Connection", "InstructionCount", "Runner", "RunnerCaps", "RunRequest", "RunResult", "run_bundle", "register",
           "names", "get", "select"]


def select(target, entry, connection: Connection | None = None) -> tuple[Runner | None, str]:
    """The first of the target's runners able to run the entry, or (None, why none could).

    With a connection (a board over SSH, or a TVM RPC tracker) the runner it names is the only one,
    whatever the target lists: the user chose the board.
    """
    if connection is not None:
        runner = get(connection.runner).connect(connection)
        reason = runner.unavailable_reason(target, entry)
        return (runner, "") if reason is None else (None, f"{runner.name}: {reason}")
    reasons = []
    for name in target.runners:
        runner = get(name)
        reason = runner.unavailable_reason(target, entry)
        if reason is None:
            return runner, ""
        reasons.append(f"{name}: {reason}")
    return None, "; ".join(reasons)
