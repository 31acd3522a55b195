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
import sys
import tempfile
from pathlib import Path

from .. import elf, proc
from ..bundle import Entry, entry_of
from ..errors import BuildError, output_tail
from ..hostenv import qemu_plugin
from ..target import cycle_model
from ..target.profile import Target
from . import register
from .base import InstructionCount, QemuRunner, RunnerCaps, RunRequest

# Exit status of the harness firmware after a fault (firmware/startup.c), and of this program when
# the firmware did not finish in time (as coreutils' timeout says it).
FAULT_EXIT_STATUS = 70
TIMEOUT_EXIT_STATUS = 124
USAGE_EXIT_STATUS = 2
# Timed runs when counting instructions: the SysTick span of all of them is read once, so the
# per-inference count is within (instructions per tick) / COUNT_REPEATS of the truth.
COUNT_REPEATS = 4
# The harness's functions around its timed runs (firmware/markers.h): the plugin counts by class between them.
MARKERS = ("edgeyard_inferences_begin", "edgeyard_inferences_end")


class QemuSystemRunner(QemuRunner):
    name = "qemu-system"
    # Under -icount the firmware's SysTick counts instructions; timings_ns converts them at the board's clock.
    caps = RunnerCaps(counts_instructions=True, emulated=True, resource="qemu",
                      timing_note="estimate: instructions at the board's clock, one per cycle; not measured time")
    emulator_hint = "install it with: apt-get install qemu-system-arm, or run ./bootstrap.sh."

    def unavailable_reason(self, target: Target, entry: Entry) -> str | None:
        if entry.kind != "firmware":
            return "it runs firmware images only"
        if not target.emulator:
            return f"target {target.name} names no emulator"
        return None

    def command(self, target: Target, entry: Entry, threads: int) -> tuple[list[str], dict[str, str]]:
        # One core, one thread: `threads` has nothing to change on a microcontroller.
        return self._command(target, entry), {}

    def _command(self, target: Target, entry: Entry, qemu_options: tuple[str, ...] = ()) -> list[str]:
        emulator = self.emulator(target)
        return [sys.executable, "-m", __name__, "--timeout-s", str(target.emulator["timeout_s"]),
                "--", *emulator, *qemu_options, *entry.argv]

    def count_instructions(self, request: RunRequest) -> InstructionCount:
        """Instructions per inference of sample 0: from SysTick under -icount shift=0, or, when the image has the
        inference markers (firmware/markers.h), exactly from the counting plugin in the same run, with its
        instructions by class and, for a core with a cycle model, the estimated cycles."""
        target, entry = request.target, entry_of(request.manifest)
        markers = elf.function_addresses(request.bundle_dir / entry.argv[0], MARKERS)
        with tempfile.TemporaryDirectory(prefix="edgeyard-count-") as io_dir:
            first_in, out, class_file = Path(io_dir, "in"), Path(io_dir, "out"), Path(io_dir, "classes.txt")
            first_in.mkdir()
            out.mkdir()
            for i, first in enumerate(request.first_sample()):
                (first_in / f"input{i}.bin").write_bytes(first)
            plugin = () if markers is None else (
                "-plugin", qemu_plugin.plugin_option(class_file, **{key: hex(markers[name]) for key, name in
                                                                    zip(("begin", "end"), MARKERS)}))
            proc.run([*self._command(target, entry, plugin), first_in, out, "1", "0", str(COUNT_REPEATS)],
                     cwd=request.bundle_dir, what=f"counting instructions on {self.name}", tail_lines=1)
            ticks = sum(int(line) for line in (out / "ticks.txt").read_text().split())
            counted = None if markers is None else _class_counts(class_file)
        instructions_per_tick = 10**9 / target.emulator["systick_hz"]  # -icount shift=0: 1 instruction per ns
        instructions = round(ticks * instructions_per_tick / COUNT_REPEATS)
        if counted is None:
            return InstructionCount(instructions)
        classes, registers_moved = counted
        # The plugin counts every instruction between the markers: exact, where SysTick counts in steps of
        # 1e9 / systick_hz instructions (40 on mps2) whose phase moves with anything the harness did before.
        instructions = round(sum(classes.values()))
        model = cycle_model.model_for(target.cpu)
        if model is None:
            return InstructionCount(instructions, instruction_classes=classes)
        best, typical, worst = cycle_model.estimate(model, classes, registers_moved)
        return InstructionCount(instructions, typical, classes, {
            "core": model.core, "cycles_per_class": {name: list(cycles) for name, cycles in model.cycles.items()},
            "cycles_per_register": model.cycles_per_register, "registers_moved_per_inference": round(registers_moved),
            "range_per_inference": [best, worst], "source": model.source, "accuracy": model.accuracy})


def _class_counts(path: Path) -> tuple[dict[str, int], float]:
    """The plugin's counts over the COUNT_REPEATS timed runs, per inference: instructions by class, registers moved."""
    try:
        counts = {name: int(value) for name, value in (line.split() for line in path.read_text().splitlines())}
    except (OSError, ValueError) as err:
        raise BuildError(f"the counting plugin left no readable class counts in {path.name} ({err}).") from None
    missing = [name for name in (*cycle_model.CLASSES, "registers_moved") if name not in counts]
    if missing:
        raise BuildError(f"the counting plugin's {path.name} lacks {', '.join(missing)}.")
    if counts.get("marker_calls") != 1:
        raise BuildError(f"the counting plugin saw the inference markers {counts.get('marker_calls', 0)} times, "
                         f"not once: the firmware's harness calls them wrongly.")
    classes = {name: round(counts[name] / COUNT_REPEATS) for name in cycle_model.CLASSES}
    return classes, counts["registers_moved"] / COUNT_REPEATS


def _semihosting_argument(value: str) -> str:
    """`value` as one semihosting command-line word inside qemu's option syntax."""
    if not value or " " in value:
        raise BuildError(f"the firmware's command line cannot carry '{value}': semihosting splits words at spaces.")
    return value.replace(",", ",,")  # qemu's option parser reads ",," as a comma


def board_command(emulator: list[str], command_line: list[str]) -> list[str]:
    """The emulator's argv for a board whose firmware reads `command_line` (IMAGE IN_DIR OUT_DIR SAMPLES
    WARMUP REPEAT) and the host's files through semihosting, one instruction per ns; no image yet
    (`-kernel IMAGE`, or `-S -gdb tcp::PORT` for a debugger to load one)."""
    words = ",".join(f"arg={_semihosting_argument(word)}" for word in command_line)
    return [
        *emulator, "-display", "none", "-serial", "null", "-monitor", "none",
        "-chardev", "stdio,id=semihosting", "-semihosting-config", f"enable=on,target=native,chardev=semihosting,{words}",
        "-icount", "shift=0",
    ]  # fmt: skip


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
        qemu = [*board_command(emulator, [Path(image).name, *protocol]), "-kernel", image]
    except BuildError as err:
        print(err, file=sys.stderr)
        return USAGE_EXIT_STATUS
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
