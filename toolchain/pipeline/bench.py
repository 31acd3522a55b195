"""Timing built bundles: `invoke bench` (one backend, here, on a board over SSH or a TVM RPC farm) and
`invoke bench --backend all` (every backend of the target side by side, runs interleaved in rounds)."""

from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import encryption, runners
from ..atomic import scratch_dir
from ..bundle import BUNDLE, entry_of, read_manifest
from ..console import Progress, quiet
from ..errors import BadInput, BuildError, EdgeyardError
from ..model.info import ModelInfo, TensorInfo
from ..options import BuildOptions
from ..target.profile import Target
from . import report, stats, validate
from .build import NO_RUNNER, BuildResult, build, target_of


def _probe_inputs(manifest: dict, bundle_dir: Path) -> list:
    """One seeded random sample for timing, shaped from the bundle's own manifest (no model loading)."""
    specs = [TensorInfo(t["name"], tuple(t["shape"]), t["dtype"]) for t in manifest["inputs"]]
    probe = ModelInfo(path=bundle_dir, format=manifest["backend"], sha256="", inputs=specs, outputs=[])
    return validate.make_inputs(probe, samples=1).tensors


@dataclass
class _Timed:
    """A built bundle ready to be timed, and the timings gathered so far."""

    built: BuildResult
    runner: runners.Runner
    manifest: dict
    inputs: list
    env: dict  # RunRequest.env: where the model key is, for an encrypted bundle
    timings_ns: list = field(default_factory=list)
    count: runners.InstructionCount | None = None

    @classmethod
    def prepare(cls, built: BuildResult, target: Target, connection: runners.Connection | None = None,
                model_key: Path | None = None) -> "_Timed":
        bundle_dir = built.out_dir / BUNDLE
        manifest = read_manifest(bundle_dir)
        runner, why = runners.select(target, entry_of(manifest), connection)
        if runner is None:
            why = why or manifest.get("not_run", NO_RUNNER)
            raise BuildError(f"cannot benchmark the {manifest['backend']} bundle for {target.name}: {why}.")
        return cls(built, runner, manifest, _probe_inputs(manifest, bundle_dir), encryption.runner_env(model_key))

    def run(self, target: Target, warmup: int, runs: int, threads: int, count_instructions: bool) -> None:
        result = runners.run_bundle(self.runner, target, self.built.out_dir / BUNDLE, self.manifest, self.inputs,
                                    warmup, runs, threads, count_instructions=count_instructions, env=self.env)
        self.timings_ns += result.timings_ns
        self.count = result.count if count_instructions else self.count

    def record(self, warmup: int, threads: int) -> BuildResult:
        section = stats.bench_section(self.runner, self.timings_ns, warmup, threads, self.count)
        updated = {**self.built.report, "bench": section}
        report.write(self.built.out_dir, updated)
        return BuildResult(self.built.out_dir, updated, cached=self.built.cached)


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
        timed = _Timed.prepare(build(opts, progress, refuse_altered=True), target, connection, opts.encrypt)
        progress(f"timing {runs} runs after {warmup} warm-up runs on {timed.runner.name}")
        timed.run(target, warmup, runs, opts.threads, count_instructions=True)
        return timed.record(warmup, opts.threads)


def compare_backends(opts: BuildOptions, runs: int = stats.DEFAULT_RUNS, warmup: int = stats.DEFAULT_WARMUP,
                     rounds: int = stats.COMPARE_ROUNDS, progress: Progress = quiet,
                     connection: runners.Connection | None = None) -> dict:
    """Build and time every backend of the target side by side.

    Runs are interleaved in `rounds` (each backend in turn, every round), so a noisy machine slows
    all backends alike. A backend that cannot build is a row with its reason, not a failure.
    Writes comparison.json and comparison.md beside the backends' build folders; returns the comparison.
    """
    _check_bench_options(runs, warmup)
    target = target_of(opts)
    rows, timed = [], []
    out_root = None
    for name in target.backends:
        backend_opts = replace(opts, backend=name, out=opts.out / name if opts.out else None)
        try:
            built = build(backend_opts, progress, refuse_altered=True)
            out_root = out_root or built.out_dir.parent
            rows.append({"backend": name, "out_dir": str(built.out_dir), "error": None})
            if built.report["validation"]["ran"]:
                timed.append(_Timed.prepare(built, target, connection, opts.encrypt))
        except EdgeyardError as err:
            rows.append({"backend": name, "out_dir": None, "error": str(err)})
    per_round = -(-runs // rounds)  # ceiling: at least `runs` in all
    for round_index in range(rounds):
        for item in timed:
            progress(f"round {round_index + 1}/{rounds}: {per_round} runs of {item.manifest['backend']}")
            item.run(target, warmup, per_round, opts.threads, count_instructions=round_index == 0)
    results = {item.manifest["backend"]: item.record(warmup, opts.threads).report for item in timed}
    for row in rows:
        if row["out_dir"] is not None:
            result = results.get(row["backend"]) or report.read(Path(row["out_dir"]))
            row.update(validation=result["validation"], bench=result["bench"])
    if out_root is None:
        raise BuildError(f"no backend of {target.name} could build this model: "
                         + "; ".join(f"{r['backend']}: {r['error']}" for r in rows))
    model_path = next(r["model"]["path"] for r in results.values()) if results else str(opts.model)
    comparison = {"target": target.name, "model": model_path, "rounds": rounds,
                  "threads": opts.threads, "rows": rows, "out_dir": str(out_root)}
    report.write_comparison(out_root, comparison)
    return comparison
