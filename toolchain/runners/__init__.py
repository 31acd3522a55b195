"""Runner registry: each module in this package registers one runner on import."""

from ..registry import Registry
from .base import Runner, RunResult, run_bundle

RUNNERS: Registry[Runner] = Registry("runner", __name__)
register = RUNNERS.register
names = RUNNERS.names
get = RUNNERS.get

__all__ = ["RUNNERS", "Runner", "RunResult", "run_bundle", "register", "names", "get", "select"]


def select(target, entry) -> tuple[Runner | None, str]:
    """The first of the target's runners able to run the entry, or (None, why none could)."""
    reasons = []
    for name in target.runners:
        runner = get(name)
        reason = runner.unavailable_reason(target, entry)
        if reason is None:
            return runner, ""
        reasons.append(f"{name}: {reason}")
    return None, "; ".join(reasons)
