"""The qemu-system runner: a bare-metal board's firmware runs on an emulated board (qemu-system-arm).

The harness firmware takes the bundle protocol's arguments (IN_DIR OUT_DIR SAMPLES WARMUP REPEAT)
as its semihosting command line and reads and writes those files through semihosting, so one image
serves validation and timing. qemu cannot take protocol arguments after its own, so the runner's
command is this module run as a program: it turns them into `-semihosting-config arg=...`, runs
qemu under `-icount shift=0` (every instruction 1 ns of virtual time: repeatable counts) with a
timeout, and turns a hang, a fault or a failure status into one clear line on stderr.

    python -m toolchain.runners.qemu_system --timeout-s S -- QEMU ARGV... IMAGE IN_DIR OUT_DIR SAMPLES WARMUP REPEAT
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from .. import proc
from ..bundle import Entry, entry_of
from ..errors import BuildError, MissingTool, output_tail
from ..target.profile import Target
from . import register
from .base import Runner, RunnerCaps, RunRequest

# Exit status of the harness firmware after a fault (firmware/startup.c), and of this program when
# the firmware did not finish in time (as coreutils' timeout says it).
FAULT_EXIT_STATUS = 70
TIMEOUT_EXIT_STATUS = 124
USAGE_EXIT_STATUS = 2
# Timed runs when counting instructions: the SysTick span of all of them is read once, so the
# per-inference count is within (instructions per tick) / COUNT_REPEATS of the truth.
COUNT_REPEATS = 4


class QemuSystemRunner(Runner):
    name = "qemu-system"
    # Under -icount the firmware's SysTick counts instructions; timings_ns converts them at the board's clock.
    caps = RunnerCaps(counts_instructions=True, emulated=True, resource="qemu",
                      timing_note="estimate: instructions at the board's clock, one per cycle; not measured time")

    def unavailable_reason(self, target: Target, entry: Entry) -> str | None:
        if entry.kind != "firmware":
            return "it runs firmware images only"
        if not target.emulator:
            return f"target {target.name} names no emulator"
        return None

    def command(self, target: Target, entry: Entry, threads: int) -> tuple[list[str], dict[str, str]]:
        emulator = list(target.emulator["command"])
        if shutil.which(emulator[0]) is None:
            raise MissingTool(emulator[0], "install it with: apt-get install qemu-system-arm, or run ./bootstrap.sh.")
        # One core, one thread: `threads` has nothing to change on a microcontroller.
        return [sys.executable, "-m", __name__, "--timeout-s", str(target.emulator["timeout_s"]),
                "--", *emulator, *entry.argv], {}

    def count_instructions(self, request: RunRequest) -> int:
        """Instructions per inference of sample 0, from SysTick under -icount shift=0."""
        target = request.target
        argv, _ = self.command(target, entry_of(request.manifest), request.threads)
        with tempfile.TemporaryDirectory(prefix="edgeyard-count-") as io_dir:
            first_in, out = Path(io_dir, "in"), Path(io_dir, "out")
            first_in.mkdir()
            out.mkdir()
            for i, first in enumerate(request.first_sample()):
                (first_in / f"input{i}.bin").write_bytes(first)
            proc.run([*argv, first_in, out, "1", "0", str(COUNT_REPEATS)], cwd=request.bundle_dir,
                     what=f"counting instructions on {self.name}", tail_lines=1)
            ticks = sum(int(line) for line in (out / "ticks.txt").read_text().split())
        instructions_per_tick = 10**9 / target.emulator["systick_hz"]  # -icount shift=0: 1 instruction per ns
        return round(ticks * instructions_per_tick / COUNT_REPEATS)


def _semihosting_argument(value: str) -> str:
    """`value` as one semihosting command-line word inside qemu's option syntax."""
    if not value or " " in value:
        raise BuildError(f"the firmware's command line cannot carry '{value}': semihosting splits words at spaces.")
    return value.replace(",", ",,")  # qemu's option parser reads ",," as a comma


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolchain.runners.qemu_system",
                                     description="Run harness firmware on qemu-system with the bundle protocol.")
    parser.add_argument("--timeout-s", type=float, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- QEMU ARGV... IMAGE IN_DIR OUT_DIR SAMPLES WARMUP REPEAT")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if len(command) < 7:
        parser.error("expected QEMU ARGV... IMAGE IN_DIR OUT_DIR SAMPLES WARMUP REPEAT")
    emulator, image, protocol = command[:-6], command[-6], command[-5:]
    machine = emulator[emulator.index("-machine") + 1] if "-machine" in emulator else emulator[0]
    try:
        words = ",".join(f"arg={_semihosting_argument(word)}" for word in [Path(image).name, *protocol])
    except BuildError as err:
        print(err, file=sys.stderr)
        return USAGE_EXIT_STATUS
    qemu = [
        *emulator, "-display", "none", "-serial", "null", "-monitor", "none",
        "-chardev", "stdio,id=semihosting", "-semihosting-config", f"enable=on,target=native,chardev=semihosting,{words}",
        "-icount", "shift=0", "-kernel", image,
    ]  # fmt: skip
    try:  # qemu dies with this wrapper (e.g. killed on a caller's timeout)
        result = proc.run(qemu, timeout_s=args.timeout_s, check=False, die_with_parent=True)
    except proc.TimedOut as expired:
        sys.stdout.write(expired.stdout or "")
        print(f"{image} did not finish within {args.timeout_s:g} s on {machine}: the firmware hangs, or the run is "
              f"too long for the target's emulator.timeout_s.", file=sys.stderr)
        return TIMEOUT_EXIT_STATUS
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode == FAULT_EXIT_STATUS:
        registers = ", ".join(" ".join(line.split()) for line in result.stdout.splitlines() if line.startswith("  "))
        print(f"{image} took a fault on {machine} ({registers or output_tail(result.stdout, None, 1)}).",
              file=sys.stderr)
    elif result.returncode != 0:
        print(f"{image} failed on {machine} with exit status {result.returncode}: "
              f"{output_tail(result.stdout, result.stderr, 1)}", file=sys.stderr)
    return result.returncode


register(QemuSystemRunner())

if __name__ == "__main__":
    sys.exit(main())
