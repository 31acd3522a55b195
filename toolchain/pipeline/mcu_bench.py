"""invoke bench-mcu: the MLPerf Tiny int8 models built for a microcontroller with each backend, in one table.

Each (model, backend) is one build() (cached like any build), validated on the emulated board: the
row takes its validation (max error in LSB), instructions per inference (counted by the emulator),
estimated cycles (instructions by class weighted by the core's published timings: an estimate),
the model's working memory (memory.arena_bytes: activations and scratch, what TFLite Micro's arena
holds besides its own bookkeeping), flash and RAM from the report's memory section, TFLite Micro's minimum arena for the
same model measured in this run, and the best published MLPerf Tiny cycles on the reference board
with the ratio to them. A backend that cannot build a model is a row with its reason; a backend
that does not exist stops the run before any build. The table goes to <out>/mcu_bench.json and .md.
"""

import time
from pathlib import Path

from .. import backends
from ..console import Progress, quiet
from ..errors import BadInput, BuildError, EdgeyardError
from ..model.tflm_arena import minimum_arena_bytes
from ..options import DEFAULT_SAMPLES
from ..paths import PACKAGE_DIR
from ..target.profile import load_target
from . import report
from .build import BuildOptions, build

# The MLPerf Tiny v1.x closed-division int8 models (mlcommons/tiny, benchmark/training/*/trained_models/).
MODELS = ("kws_ref_model.tflite", "vww_96_int8.tflite", "pretrainedResnet_quant.tflite", "ad01_int8.tflite")
# Where a checkout next to the shared model folder finds them (benchmarks only; the tests build their own).
DEFAULT_MODELS = PACKAGE_DIR.parent.parent / "shared" / "models" / "mlperf_tiny"
DEFAULT_OUT = Path("build") / "mcu-bench"

PUBLISHED_BOARD = "nucleo-l4r5zi"
# Best published MLPerf Tiny latency on NUCLEO-L4R5ZI (Cortex-M4F at 120 MHz) as cycles = latency x 120 MHz.
# Sources: mlcommons/tiny_results_v1.2 (ST X-CUBE-AI 9.0) and v1.1 (Plumerai Inference Engine),
# results/<system>/<task>/performance/results.txt, "Median throughput is X inf./sec.".
PUBLISHED_BEST = {
    "kws_ref_model.tflite": (5_180_000, "ST X-CUBE-AI 9.0, MLPerf Tiny v1.2: 43.19 ms"),
    "vww_96_int8.tflite": (10_670_000, "ST X-CUBE-AI 9.0, MLPerf Tiny v1.2: 88.93 ms"),
    "pretrainedResnet_quant.tflite": (19_820_000, "ST X-CUBE-AI 9.0, MLPerf Tiny v1.2: 165.13 ms"),
    "ad01_int8.tflite": (486_000, "Plumerai Inference Engine, MLPerf Tiny v1.1: 4.05 ms"),
}


def run_mcu_bench(target: str, models: Path | None = None, backend_names: list[str] | None = None,
                  out: Path | None = None, samples: int = DEFAULT_SAMPLES, progress: Progress = quiet) -> dict:
    """Build every MLPerf Tiny model of `models` with each backend for `target`; write mcu_bench.json and .md."""
    profile = load_target(target)
    if profile.os != "none":
        raise BadInput(f"target '{target}' is not a microcontroller (os \"{profile.os}\"); bench-mcu measures "
                       f"bare-metal targets such as {PUBLISHED_BOARD}.")
    folder = _models_folder(models)
    names = backend_names or list(profile.backends)
    known = backends.names()
    for name in names:
        if name not in known:
            raise BadInput(f"backend '{name}' does not exist (known: {', '.join(known)}).")
    present = [folder / name for name in MODELS if (folder / name).is_file()]
    if not present:
        raise BadInput(f"{folder} holds none of the MLPerf Tiny int8 models ({', '.join(MODELS)}).")
    out_root = Path(out) if out else DEFAULT_OUT
    started = time.monotonic()
    rows = []
    for number, model in enumerate(present, 1):
        progress(f"model {number}/{len(present)}: {model.name}: TFLite Micro's minimum arena")
        try:
            tflm_arena = minimum_arena_bytes(model)
        except BuildError as err:
            tflm_arena = None
            progress(f"  {err}")
        for name in names:
            progress(f"model {number}/{len(present)}: {model.name} with {name}")
            options = BuildOptions(target=target, model=model, backend=name, out=out_root / model.stem / name,
                                   samples=samples)
            rows.append(_row(model, name, target, tflm_arena, options, lambda message: progress(f"  {message}")))
    bench = {"target": target, "models": str(folder), "backends": names, "samples": samples,
             "out_dir": str(out_root), "published_board": PUBLISHED_BOARD,
             "wall_seconds": round(time.monotonic() - started, 1), "rows": rows}
    out_root.mkdir(parents=True, exist_ok=True)
    report.write_mcu_bench(out_root, bench)
    return bench


def _models_folder(models: Path | None) -> Path:
    if models is not None:
        if not Path(models).is_dir():
            raise BadInput(f"{models} is not a folder (give --models DIR holding {', '.join(MODELS)}).")
        return Path(models)
    if not DEFAULT_MODELS.is_dir():
        raise BadInput(f"no MLPerf Tiny models: {DEFAULT_MODELS} does not exist; give --models DIR holding "
                       f"{', '.join(MODELS)} (from github.com/mlcommons/tiny, benchmark/training/*/trained_models/).")
    return DEFAULT_MODELS


def _row(model: Path, backend: str, target: str, tflm_arena: int | None, options: BuildOptions,
         progress: Progress) -> dict:
    published, source = PUBLISHED_BEST[model.name] if target == PUBLISHED_BOARD else (None, None)
    row = {"model": model.name, "backend": backend, "error": None, "tflm_arena_bytes": tflm_arena,
           "published_cycles": published, "published_source": source}
    try:
        built = build(options, progress)
    except EdgeyardError as err:
        return {**row, "error": str(err)}
    result = built.report
    validation, bench, memory = result["validation"], result["bench"], result["memory"] or {}
    cycles = bench.get("estimated_cycles_per_inference")
    # The model's working memory: the arena, plus activations a backend keeps in static buffers of their own (tvm).
    arena = memory.get("arena_bytes")
    return {
        **row,
        "out_dir": str(built.out_dir),
        "validated": bool(validation["passed"]),
        "max_abs_error": validation["max_abs_error"],
        "error_unit": validation["outputs"][0]["unit"] if validation["outputs"] else None,
        "reference": validation["reference"],
        "instructions_per_inference": bench["instructions_per_inference"],
        "estimated_cycles_per_inference": cycles,
        "estimated_cycles_range": (bench.get("cycle_model") or {}).get("range_per_inference"),
        "arena_bytes": memory.get("arena_bytes"),
        "activations_bytes": memory.get("activations_bytes"),
        "working_memory_bytes": arena,
        "arena_ratio": round(arena / tflm_arena, 3) if arena is not None and tflm_arena else None,
        "flash_bytes": memory.get("flash_bytes"),
        "ram_bytes": memory.get("ram_bytes"),
        "cycles_over_published": round(cycles / published, 2) if cycles and published else None,
    }
