"""Latency statistics from the per-inference timings a bundle reports."""

import numpy as np

DEFAULT_RUNS = 100
DEFAULT_WARMUP = 10
COMPARE_ROUNDS = 5  # `bench --backend all` interleaves the backends' runs in this many rounds
BUILD_RUNS = 20  # the quick figure every build records; `invoke bench` replaces it
BUILD_WARMUP = 3


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


def bench_section(runner_name: str | None, emulated: bool, timings_ns: list[int], warmup: int, threads: int,
                  instructions_per_inference: int | None = None) -> dict:
    return {
        "runner": runner_name,
        "emulated": emulated,
        "latency_ms": latency_ms(timings_ns),
        "instructions_per_inference": instructions_per_inference,
        "runs": len(timings_ns),
        "warmup": warmup,
        "threads": threads,
        "note": "wall time under emulation, not device time" if emulated and timings_ns else None,
    }
