"""TFLite Micro's minimum arena for a TFLite model: the yardstick for a microcontroller build's `arena_bytes`.

TFLM allocates everything a model needs at run time (tensors, scratch buffers, its own per-node and
per-tensor structures) from one arena the application provides, so its minimum arena is what TFLM
costs in RAM besides the weights. The `tflite-micro` wheel's interpreter (a host build of TFLM with
the recording allocator) reports a figure: print_allocations() prints (to stderr) "Arena allocation
total N bytes". That N is not the minimum: it depends on the arena it was given, and it leaves out
the temporary memory the planner needs while it plans. With a 64 MB arena it says 3,984 B for the
MLPerf Tiny AD model, which needs 4,632 B, and 103,680 B for VWW, which needs 103,672 B. So the
measurement bisects: the smallest arena_size from_file() accepts, bracketed from the reported N
(MLPerf Tiny int8: KWS 24,272 B, VWW 103,672 B, IC 55,984 B, AD 4,632 B). The wheel is a 64-bit
host build: TFLM's structures that hold pointers are bigger there than in a 32-bit Cortex-M build,
so the figure is at most a few hundred bytes above what the same model needs on the board.

It runs in a child process (python -m toolchain.model.tflm_arena MODEL): the interpreter prints to
the C-level stdout and stderr, and crashes (segmentation fault) instead of failing when given an arena
far too small, so the build's own process must not host it. About 0.3 s per model.
"""

import ctypes
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from .. import proc
from ..errors import BuildError

PROBE_ARENA_BYTES = 64 * 1024 * 1024  # surely enough for any model a microcontroller could run
_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_TIMEOUT_S = 60
_SMALLEST_TRIED = 1024


def minimum_arena_bytes(model: Path) -> int:
    """The smallest arena (bytes) TFLite Micro's interpreter accepts for the .tflite `model`."""
    result = proc.run([sys.executable, "-m", __name__, str(model)], timeout_s=_TIMEOUT_S, check=False)
    last = (result.stdout.strip().splitlines() or [""])[-1]
    if result.returncode != 0 or not last.startswith("{"):
        why = f"exit status {result.returncode}" if result.returncode else "no figure"
        raise BuildError(f"TFLite Micro could not measure its arena for {model}: {why} "
                         f"({' '.join(result.stderr.split()[-12:]) or 'no message'}).")
    return int(json.loads(last)["tflm_arena_bytes"])


def _accepts(runtime, model: Path, arena_bytes: int) -> bool:
    try:
        runtime.Interpreter.from_file(str(model), arena_size=arena_bytes)
    except RuntimeError:  # "TFLM failed to allocate tensors"
        return False
    return True


def _reported_total(interpreter) -> int:
    """print_allocations()'s total, read from the C-level stderr it writes to."""
    libc = ctypes.CDLL(None)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            interpreter.print_allocations()
            libc.fflush(None)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    found = _TOTAL.search(text)
    if found is None:
        raise SystemExit(f"print_allocations() reported no total: {text[-200:]!r}")
    return int(found.group(1))


def main(argv: list[str]) -> int:
    from tflite_micro.python.tflite_micro import runtime

    model = Path(argv[0])
    reported = _reported_total(runtime.Interpreter.from_file(str(model), arena_size=PROBE_ARENA_BYTES))
    # Bracket the minimum near the reported total (far smaller arenas crash the interpreter), then bisect.
    refused, accepted = reported // 2, reported
    while _accepts(runtime, model, refused) and refused > _SMALLEST_TRIED:
        refused //= 2
    while not _accepts(runtime, model, accepted):
        if accepted >= PROBE_ARENA_BYTES:
            print(f"no arena up to {PROBE_ARENA_BYTES} bytes is enough", file=sys.stderr)
            return 1
        accepted *= 2
    while accepted - refused > 1:
        middle = (refused + accepted) // 2
        refused, accepted = (refused, middle) if _accepts(runtime, model, middle) else (middle, accepted)
    print(json.dumps({"tflm_arena_bytes": accepted, "reported_total_bytes": reported}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
