"""invoke bench-linux: the MLPerf Tiny models of a folder on the host (latency) and an emulated Linux board
(instructions), built with tvm untuned, tvm tuned (when the target's tuning database has records), litert,
onnxruntime and --backend auto, with the ratio of what auto ships to the best of litert and onnxruntime.

Every build is an ordinary build() in the default folders (build/<target>/<model-stem>/<backend>/, so auto's
candidates are the same, cached builds; untuned tvm goes to .../tvm-untuned/, built against an empty tuning
database). The host's latencies come from one run with the variants interleaved in rounds (noise slows all
alike; still a shared machine's figures); the board's instructions are the emulator's deterministic counts.
"""

import json
import tempfile
from pathlib import Path

from ..atomic import atomic_write
from ..console import Progress, quiet
from ..errors import BadInput, EdgeyardError
from ..target.profile import AUTO_BACKEND, load_target
from . import stats
from .bench import TUNED_TVM, UNTUNED_TVM, untuned_tvm_options
from .build import BuildOptions, build
from .mcu_bench import _models_folder
from .timing import Timed, interleaved

TARGETS = ("host", "rpi4")
VARIANTS = (UNTUNED_TVM, TUNED_TVM, "litert", "onnxruntime", AUTO_BACKEND)
DEFAULT_RUNS = 100
# Each round runs every variant in a new process, and on this VM one process of the same bundle can run 20% slower
# than the next for its whole life: ten rounds keep a few such processes from moving the median.
ROUNDS = 10


def run_linux_bench(models: Path | None = None, tuning_db: Path | None = None, samples: int = 8,
                    runs: int = DEFAULT_RUNS, targets: tuple[str, ...] = TARGETS, progress: Progress = quiet) -> dict:
    """One row per (model, target) with each variant's cost; written to build/linux-bench.json."""
    if runs < 1 or samples < 1:
        raise BadInput(f"--runs and --samples must be at least 1 (got {runs} and {samples}).")
    folder = _models_folder(models)
    present = sorted(p for p in folder.iterdir() if p.suffix == ".tflite")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeyard-untuned-") as empty_database:
        for number, model in enumerate(present, 1):
            for target in targets:
                progress(f"model {number}/{len(present)}: {model.name} on {target}")
                rows.append(_row(model, target, tuning_db, Path(empty_database), samples, runs, progress))
    result = {"models": str(folder), "runs": runs, "rounds": ROUNDS, "rows": rows}
    atomic_write(Path("build") / "linux-bench.json", json.dumps(result, indent=2) + "\n")
    return result


def _row(model: Path, target: str, tuning_db: Path | None, empty_database: Path, samples: int, runs: int,
         progress: Progress) -> dict:
    options = {
        UNTUNED_TVM: untuned_tvm_options(BuildOptions(target, model, "tvm", samples=samples), empty_database),
        TUNED_TVM: BuildOptions(target, model, "tvm", samples=samples, tuning_db=tuning_db),
        "litert": BuildOptions(target, model, "litert", samples=samples),
        "onnxruntime": BuildOptions(target, model, "onnxruntime", samples=samples),
        AUTO_BACKEND: BuildOptions(target, model, AUTO_BACKEND, samples=samples, tuning_db=tuning_db),
    }
    cells, built = {}, {}
    for variant, opts in options.items():
        try:
            result = build(opts, lambda message, variant=variant: progress(f"  {variant}: {message}"))
        except EdgeyardError as err:
            cells[variant] = {"error": str(err)}
            continue
        tuned = (result.report.get("tuning") or {}).get("tuned", 0)
        if variant == TUNED_TVM and not tuned:
            cells[variant] = {"error": "no tuning records for this model (invoke tune)"}
            continue
        built[variant] = result
        bench = result.report["bench"]
        cells[variant] = {"backend": result.report["backend"], "error": None, "tuned_tasks": tuned,
                          "instructions_per_inference": bench["instructions_per_inference"], "latency_ms": None}
    by = "instructions" if all(c.get("instructions_per_inference") for c in cells.values() if not c["error"]) \
        else "latency"
    if by == "latency" and built:
        profile = load_target(target)
        timed = {variant: Timed.prepare(result.out_dir, profile) for variant, result in built.items()}
        interleaved(list(timed.values()), profile, stats.DEFAULT_WARMUP, runs, ROUNDS, 1,
                    lambda message: progress(f"  {message}"), count_instructions=False)
        for variant, item in timed.items():
            cells[variant]["latency_ms"] = stats.latency_ms(item.timings_ns)["median"]
    field = "instructions_per_inference" if by == "instructions" else "latency_ms"
    best_runtime = [cells[v][field] for v in ("litert", "onnxruntime") if not cells[v]["error"]]
    auto = cells[AUTO_BACKEND]
    ratio = auto[field] / min(best_runtime) if best_runtime and not auto["error"] else None
    return {"model": model.name, "target": target, "by": by, "cells": cells, "auto_over_best_runtime": ratio}


def linux_bench_text(result: dict) -> str:
    """The table: one row per (model, target), a column per variant, the auto ratio last; a variant that failed
    reads "failed [k]" and note k under the table says why in full."""
    from ..console import one_line, table
    from ..errors import short_reason

    notes: list[str] = []

    def cell(row: dict, variant: str) -> str:
        value = row["cells"][variant]
        if value["error"]:
            notes.append(f"[{len(notes) + 1}] {variant}, {row['model']} on {row['target']}: "
                         f"{one_line(short_reason(value['error'], row['model']))}")
            return f"failed [{len(notes)}]"
        if row["by"] == "instructions":
            text = f"{value['instructions_per_inference']:,}"
        else:
            text = f"{value['latency_ms']:.4g} ms"
        return f"{text} [{value['backend']}]" if variant == AUTO_BACKEND else text

    rows = [[row["model"], row["target"], row["by"], *(cell(row, v) for v in VARIANTS),
             f"{row['auto_over_best_runtime']:.2f}" if row["auto_over_best_runtime"] else "-"] for row in result["rows"]]
    head = (f"MLPerf Tiny models of {result['models']}: host latency medians ({result['runs']} runs each, interleaved "
            f"in {result['rounds']} rounds on a shared machine: noisy), rpi4 instructions per inference (emulated, "
            "instructions not cycles) -> build/linux-bench.json")
    body = table(["model", "target", "by", *VARIANTS, "auto / best(litert, ort)"], rows)
    return "\n".join([head, body, *notes])
