"""The host runner: bundles built for this machine's architecture run natively."""

import platform
import sys

from ..bundle import Entry
from ..target.profile import Target
from . import register
from .base import Runner, RunnerCaps


class HostRunner(Runner):
    name = "host"
    caps = RunnerCaps()

    def unavailable_reason(self, target: Target, entry: Entry) -> str | None:
        if entry.arch not in ("any", platform.machine()):
            return f"the bundle is for {entry.arch}, this machine is {platform.machine()}"
        return None

    def command(self, target: Target, entry: Entry, threads: int) -> tuple[list[str], dict[str, str]]:
        argv = list(entry.argv)
        if entry.kind == "python":
            argv[0] = sys.executable  # the board's python3 is this environment's interpreter here
        return argv, {**entry.env, "EDGEYARD_THREADS": str(threads), "TVM_NUM_THREADS": str(threads)}


register(HostRunner())
