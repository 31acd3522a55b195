"""Latency statistics from the per-inference timings a bundle reports."""

import numpy as np

DEFAULT_RUNS = 100
DEFAULT_WARMUP = 10
COMPARE_ROUNDS = 5  # `bench --backend all` interleaves the backends' runs in this many rounds
BUILD_RUNS = 20  # the quick figure every build records; `invoke bench` replaces it
BUILD_WARMUP = 3
# --backend auto's latency comparison (where runs are not counted): runs of each candidate, interleaved in rounds.
AUTO_RUNS = 30
AUTO_ROUNDS = 3
AUTO_WARMUP = 3
# A close call (the two fastest within this fraction of each other) is timed again, many more runs in more rounds:
# a noisy 30 runs had shipped a tuned TVM 10% slower than LiteRT.
AUTO_CLOSE_CALL = 0.15
AUTO_CLOSE_CALL_RUNS = 300
AUTO_CLOSE_CALL_ROUNDS = 6


def latency_ms(timings_ns: list[int]) -> dict | None:
    if not timings_ns:
        return None
    ms = np.asarray(timings_ns, dtype=np.float64) / 1e6
    return {
        "median": float(np.median(ms)),
        "p90": float(np.percentile(ms, 90)),
        "min": float(ms.min()),
        "max": float(ms.max()),
    }


def layer_profile(layers: list[dict] | None, counts: list[int] | None, emulated: bool) -> list[dict] | None:
    """report.json's `profile`: each layer the bundle's manifest lists ({layer, operator, op, name, macs})
    with its mean share of a timed inference, in instructions under an emulator, cycles on a board."""
    if not layers or counts is None or len(counts) != len(layers):
        return None
    unit = "instructions" if emulated else "cycles"
    return [{**layer, unit: count} for layer, count in zip(layers, counts)]


def bench_section(runner, timings_ns: list[int], warmup: int, threads: int, count=None) -> dict:
    """The report's `bench` section; `runner` is None when the bundle could not run; `count` is the runner's
    InstructionCount where it counts."""
    return {
        "runner": runner.name if runner else None,
        "emulated": bool(runner and runner.caps.emulated),
        "latency_ms": latency_ms(timings_ns),
        "timings_ms": [round(t / 1e6, 6) for t in timings_ns],  # each timed run: report.html's histogram
        "instructions_per_inference": count.instructions_per_inference if count else None,
        "estimated_cycles_per_inference": count.estimated_cycles_per_inference if count else None,
        "instruction_classes": count.instruction_classes if count else None,
        "cycle_model": count.cycle_model if count else None,
        "runs": len(timings_ns),
        "warmup": warmup,
        "threads": threads,
        "note": runner.caps.latency_note if runner and timings_ns else None,
    }
