"""Timing built bundles: `invoke bench` (one backend, here, on a board over SSH or a TVM RPC farm) and
`invoke bench --backend all` (every backend of the target side by side, runs interleaved in rounds)."""

import tempfile
from dataclasses import replace
from pathlib import Path

from .. import runners
from ..atomic import scratch_dir
from ..console import Progress, quiet
from ..errors import BadInput, BuildError, EdgeyardError
from ..options import BuildOptions
from ..paths import build_dir_for
from . import report, stats
from .build import BuildResult, build, target_of
from .timing import Timed, interleaved


def _record(timed: Timed, built: BuildResult, warmup: int, threads: int) -> BuildResult:
    """The build's report with the new timings in its `bench` section, written to its folder."""
    updated = {**built.report, "bench": timed.section(warmup, threads)}
    report.write(built.out_dir, updated)
    return BuildResult(built.out_dir, updated, cached=built.cached)


TUNED_TVM, UNTUNED_TVM = "tvm tuned", "tvm untuned"


def untuned_tvm_options(opts: BuildOptions, empty_database: Path) -> BuildOptions:
    """The tvm build of `opts` without tuning records: an empty tuning database, and its own folder beside the
    tuned build's (<target>/<model-stem>/tvm-untuned/, or --out's tvm-untuned/)."""
    out = opts.out / UNTUNED_TVM.replace(" ", "-") if opts.out else build_dir_for(
        opts.target, str(opts.model) if opts.model else None, UNTUNED_TVM.replace(" ", "-"), None)
    return replace(opts, backend="tvm", tuning_db=empty_database, out=out)


def _check_bench_options(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise BadInput(f"--runs must be at least 1 and --warmup at least 0 (got {runs} and {warmup}).")


def run_bench(opts: BuildOptions, runs: int = stats.DEFAULT_RUNS, warmup: int = stats.DEFAULT_WARMUP,
              progress: Progress = quiet, connection: runners.Connection | None = None) -> BuildResult:
    """Build if needed, then time `runs` inferences after `warmup` and update the folder's report.

    With a connection the timed runs happen on that board (SSH) or device farm (TVM RPC) instead of
    the target's own runner; the build and its validation still run here first."""
    _check_bench_options(runs, warmup)
    target = target_of(opts)
    # One scratch folder for the build and the timing: the paths a firmware reads over semihosting, and
    # with them its instruction count, are the same as the build's own run.
    with scratch_dir():
        built = build(opts, progress, refuse_altered=True)
        timed = Timed.prepare(built.out_dir, target, connection, opts.encrypt)
        progress(f"timing {runs} runs after {warmup} warm-up runs on {timed.runner.name}")
        timed.run(target, warmup, runs, opts.threads, count_instructions=True)
        return _record(timed, built, warmup, opts.threads)


def compare_backends(opts: BuildOptions, runs: int = stats.DEFAULT_RUNS, warmup: int = stats.DEFAULT_WARMUP,
                     rounds: int = stats.COMPARE_ROUNDS, progress: Progress = quiet,
                     connection: runners.Connection | None = None) -> dict:
    """Build and time every backend of the target side by side; tvm twice (tuned and untuned rows) when the
    target's tuning database has records for the model's kernels.

    Runs are interleaved in `rounds` (each backend in turn, every round), so a noisy machine slows
    all backends alike. A backend that cannot build is a row with its reason, not a failure.
    Writes comparison.json and comparison.md beside the backends' build folders; returns the comparison.
    """
    _check_bench_options(runs, warmup)
    target = target_of(opts)
    rows, timed, builds = [], [], {}

    def attempt(label: str, backend_opts: BuildOptions) -> BuildResult | None:
        try:
            built = build(backend_opts, progress, refuse_altered=True)
        except EdgeyardError as err:
            rows.append({"backend": label, "out_dir": None, "error": str(err)})
            return None
        rows.append({"backend": label, "out_dir": str(built.out_dir), "error": None})
        if built.report["validation"]["ran"]:
            timed.append(Timed.prepare(built.out_dir, target, connection, opts.encrypt))
            builds[str(built.out_dir)] = built
        return built

    with tempfile.TemporaryDirectory(prefix="edgeyard-untuned-") as empty_database:
        for name in target.backends:
            built = attempt(name, replace(opts, backend=name, out=opts.out / name if opts.out else None))
            if built is not None and (built.report.get("tuning") or {}).get("tuned"):
                rows[-1]["backend"] = TUNED_TVM
                attempt(UNTUNED_TVM, untuned_tvm_options(opts, Path(empty_database)))
    interleaved(timed, target, warmup, runs, rounds, opts.threads, progress)
    results = {str(item.out_dir): _record(item, builds[str(item.out_dir)], warmup, opts.threads).report
               for item in timed}
    for row in rows:
        if row["out_dir"] is not None:
            result = results.get(row["out_dir"]) or report.read(Path(row["out_dir"]))
            row.update(validation=result["validation"], bench=result["bench"])
    out_root = next((Path(row["out_dir"]).parent for row in rows if row["out_dir"] is not None), None)
    if out_root is None:
        raise BuildError(f"no backend of {target.name} could build this model: "
                         + "; ".join(f"{r['backend']}: {r['error']}" for r in rows))
    model_path = next(r["model"]["path"] for r in results.values()) if results else str(opts.model)
    comparison = {"target": target.name, "model": model_path, "rounds": rounds,
                  "threads": opts.threads, "rows": rows, "out_dir": str(out_root)}
    report.write_comparison(out_root, comparison)
    return comparison
