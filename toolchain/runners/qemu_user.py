"""The qemu-user runner: a Linux board's programs run on this machine under qemu-user.

Native bundles (TVM's runner, ExecuTorch's, or the one executable of a board without a TVM runtime) run against
the cross toolchain's sysroot, the emulator command's -L folder. Python bundles (LiteRT, ONNX Runtime) run on the board's python3 in the emulated
Debian 12 userland (toolchain/hostenv/userland.py), which takes -L's place and shows the board's
/proc/cpuinfo, so the wheels pick the kernels they would pick on the board.

Instructions per inference come from the counting plugin (toolchain/hostenv/qemu_plugin.py): two untimed
runs on one thread, of sample 0 once and of sample 0 repeated; the difference of their counts
divided by the difference in samples is what one more inference executes (with copying its input
in and its output out), start-up and loading cancelling out. Untimed, because a run that writes
its timings formats numbers whose digits vary; with an empty host environment and a fixed Python
hash seed the two counts, and so the figure, are the same run after run.
"""

import shutil
import tempfile
from pathlib import Path

from .. import proc
from ..bundle import Entry, entry_of
from ..hostenv import qemu_plugin, userland
from ..target.profile import Target
from . import register
from .base import InstructionCount, QemuRunner, RunnerCaps, RunRequest

# SAMPLES of the two counted runs.
COUNT_SAMPLES = (1, 9)
# A counted run's guest environment on top of one thread: a fixed hash seed, or Python's
# randomized dict and set layouts change the instructions from run to run. Nothing else from this
# machine's environment reaches the guest (but RunRequest.env: an encrypted bundle's key path), and
# the bundle runs from a copy in a folder whose path has the same length every time: even the length
# of `$_` or of the build folder's path moves the guest's stack, and with it a few hundred instructions per inference.
_COUNT_ENV = {"PYTHONHASHSEED": "0"}
_COUNT_TIMEOUT_S = 600


def _guest_env(threads: int) -> dict[str, str]:
    return {
        "EDGEYARD_THREADS": str(threads), "TVM_NUM_THREADS": str(threads),
        # Threads nobody asked for run instructions at their own pace: OpenBLAS (inside numpy, which
        # only moves data here) starts one per core at import, and ONNX Runtime 1.32 starts a telemetry
        # uploader (which would try the network from the emulated board, too).
        "OPENBLAS_NUM_THREADS": "1", "ORT_DISABLE_TELEMETRY": "1",
    }  # fmt: skip


def _with_root(emulator: list[str], root: Path) -> list[str]:
    """The emulator command with `root` as its -L folder (the guest's /)."""
    if "-L" not in emulator:
        return [*emulator, "-L", str(root)]
    at = emulator.index("-L") + 1
    return [*emulator[:at], str(root), *emulator[at + 1:]]


class QemuUserRunner(QemuRunner):
    name = "qemu-user"
    caps = RunnerCaps(counts_instructions=True, emulated=True, resource="qemu")
    emulator_hint = "install it with: apt-get install qemu-user, or run ./bootstrap.sh."

    def unavailable_reason(self, target: Target, entry: Entry) -> str | None:
        if not target.emulator:
            return f"target {target.name} names no emulator"
        if entry.kind == "python":
            if target.arch not in userland.ARCHES:
                return f"no emulated userland exists for {target.arch} (PyPI has no {target.arch} wheels of the runtimes)"
            if not target.emulator.get("cpuinfo"):
                return f"target {target.name} has no emulator.cpuinfo table for the emulated userland"
            return None
        if entry.kind != "native":
            return "it runs Linux programs only"
        if entry.arch != target.arch:
            return f"the bundle is for {entry.arch}, the target is {target.arch}"
        return None

    def command(self, target: Target, entry: Entry, threads: int) -> tuple[list[str], dict[str, str]]:
        return self._command(target, entry, _guest_env(threads)), {}

    def _command(self, target: Target, entry: Entry, guest_env: dict[str, str]) -> list[str]:
        emulator = self.emulator(target)
        argv = list(entry.argv)
        if entry.kind == "python":
            root = userland.board_root(target)
            emulator = _with_root(emulator, root)
            argv[0] = str(root / userland.PYTHON)  # the board's python3, not this machine's
        # -E sets the guest's environment without touching the emulator process's own.
        env_args = [arg for key, value in {**entry.env, **guest_env}.items() for arg in ("-E", f"{key}={value}")]
        return emulator + env_args + argv

    def count_instructions(self, request: RunRequest) -> InstructionCount:
        """Instructions per inference of sample 0, counted on one thread whatever `threads` is."""
        manifest = request.manifest
        emulator, *argv = self._command(request.target, entry_of(manifest), {**_guest_env(1), **_COUNT_ENV})
        counts = []
        with tempfile.TemporaryDirectory(prefix="edgeyard-count-") as work:
            copy = shutil.copytree(request.bundle_dir, Path(work, "bundle"), symlinks=True)
            for samples in COUNT_SAMPLES:
                run_in, run_out, count_file = (Path(work, f"{name}{samples}") for name in ("in", "out", "count"))
                run_in.mkdir()
                run_out.mkdir()
                for i, first in enumerate(request.first_sample()):
                    (run_in / f"input{i}.bin").write_bytes(first * samples)
                counted = [shutil.which(emulator), "-plugin", qemu_plugin.plugin_option(count_file), *argv, str(run_in), str(run_out),
                           str(samples), "0", "0"]
                proc.run(counted, cwd=copy, env=dict(request.env), timeout_s=_COUNT_TIMEOUT_S,
                         what=f"counting the instructions of the {manifest['backend']} bundle")
                counts.append(int(count_file.read_text()))
        return InstructionCount(round((counts[1] - counts[0]) / (COUNT_SAMPLES[1] - COUNT_SAMPLES[0])))


register(QemuUserRunner())
