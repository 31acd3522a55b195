"""The build pipeline: target + model -> (convert) -> backend bundle -> run -> validate -> time -> report.

Every stage takes plain data and returns plain data; only tasks.py prints. A build is staged in a
temporary sibling folder and moved into place when complete, so a failure leaves nothing behind
and an older good build stays untouched.
"""

import hashlib
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .. import __version__, backends, runners
from . import bench, cache, report, validate
from ..bundle import BUNDLE, entry_of, read_manifest
from ..options import BuildOptions
from ..errors import EXIT_BUILD_FAILED, BadInput, BuildError, EdgeyardError, MissingTool, short_reason
from ..model import model_sha256
from ..model.info import ModelInfo, TensorInfo
from ..paths import build_dir_for
from ..target.settings import with_settings
from ..target.profile import Target, load_target

Progress = Callable[[str], None]
AUTO = "auto"  # --backend auto: the target's backends in its order of preference, the first that builds and validates


def quiet(_: str) -> None:
    pass


@dataclass
class BuildResult:
    out_dir: Path
    report: dict
    cached: bool


@dataclass
class _Plan:
    """Everything a build is decided by, known before any heavy work."""

    target: Target
    backend: object
    model_path: Path
    data: Path | None
    out_dir: Path
    key: str
    versions: dict
    quantization: object = None  # convert.quantize.Request, or None


def target_of(opts: BuildOptions) -> Target:
    """The build's target profile with its --set changes."""
    return with_settings(load_target(opts.target), opts.settings)


def _plan(opts: BuildOptions) -> _Plan:
    target = target_of(opts)
    backend_name = opts.backend or target.default_backend
    backend = backends.get(backend_name)
    if backend_name not in target.backends:
        why = (target.unavailable_backends or {}).get(backend_name)
        raise BadInput(f"backend '{backend_name}' does not serve target '{target.name}': {why}." if why else
                       f"backend '{backend_name}' does not serve target '{target.name}' "
                       f"(its backends: {', '.join(target.backends)}).")
    if opts.samples < 1:
        raise BadInput(f"--samples must be at least 1, not {opts.samples}.")
    from ..convert.quantize import plan as quantization_plan

    # Before the default model is built: option mistakes fail at once.
    quantization = quantization_plan(opts.quantize, opts.quantize_io, opts.calibration, opts.eval_data, opts.model,
                                     backend, has_data=opts.data is not None or opts.model is None)
    data = opts.data
    if opts.model is None:
        from ..model.default import default_model

        model_path, default_data = default_model()
        data = data or default_data
    else:
        model_path = Path(opts.model)  # model_format() below says so when it is missing
    if data is not None and not Path(data).is_file():
        raise BadInput(f"{data}: dataset file not found.")
    out_dir = build_dir_for(target.name, str(model_path), backend_name, opts.out)
    from ..convert import repair
    from ..model import model_format
    from ..model.reference import FRAMEWORKS, framework_versions

    versions = {"edgeyard": __version__, **backend.versions(), **repair.versions(),
                **framework_versions(FRAMEWORKS[model_format(model_path)])}
    options = {"input_shapes": opts.input_shapes, "samples": opts.samples, "threads": opts.threads,
               "quantization": quantization.cache_key() if quantization else None,
               "data": model_sha256(Path(data)) if data else None}
    key = cache.build_key(model_sha256(model_path), target.sha256, backend_name, options, versions)
    return _Plan(target, backend, model_path, Path(data) if data else None, out_dir, key, versions, quantization)


@contextmanager
def _staging(out_dir: Path):
    """A temporary folder beside out_dir that replaces it on success and vanishes on failure."""
    created = [p for p in reversed(out_dir.absolute().parents) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    stage.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for parent in reversed(created):  # leave no empty folders the build made
            if parent.exists() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{stage.name}")
        out_dir.rename(old)
    stage.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _in_backend_format(info: ModelInfo, backend, workdir: Path, progress: Progress) -> ModelInfo:
    """The model in a format the backend compiles: as given, or converted (Keras -> TFLite, TF -> ONNX)."""
    if info.format in backend.formats:
        return info
    from .. import convert

    for fmt in backend.formats:
        if fmt == "tflite" and info.format in ("keras", "savedmodel"):
            progress(f"converting {info.format} to TFLite")
            return convert.to_tflite(info, workdir)
        if fmt == "onnx" and info.format in ("keras", "savedmodel", "tflite"):
            progress(f"converting {info.format} to ONNX")
            return convert.to_onnx(info, workdir)
    raise BadInput(f"{info.path}: backend '{backend.name}' compiles {' or '.join(backend.formats)} models and "
                   f"cannot take a {info.format} model; try another backend.")


def _check_ops(info: ModelInfo, compiled: ModelInfo, backend, target: Target, model_path: Path) -> None:
    """Fail naming the ops the backend cannot import (in the user's model_path) and the backends that can."""
    unsupported = backend.unsupported_ops(compiled)
    if not unsupported:
        return
    able = []
    for name in target.backends:
        other = backends.get(name)
        if other is backend:
            continue
        candidate = info if info.format in other.formats else compiled if compiled.format in other.formats else None
        if candidate is not None and not other.unsupported_ops(candidate):
            able.append(name)
    hint = f"; try --backend {' or --backend '.join(able)}" if able else ""
    ops = ", ".join(unsupported)
    raise BadInput(f"{model_path}: backend '{backend.name}' cannot import op{'s' if len(unsupported) > 1 else ''} "
                   f"{ops}{hint}.")


def _why_not_run(runner_reasons: str, manifest: dict) -> str:
    """Why no runner could run the bundle: the runners' reasons, else the backend's (e.g. no GPU here)."""
    return runner_reasons or manifest.get("not_run", "no runner of the target is available")


def build(opts: BuildOptions, progress: Progress = quiet) -> BuildResult:
    if opts.backend == AUTO:
        return _build_first_that_works(opts, progress)
    plan = _plan(opts)
    hit = cache.cached_report(plan.out_dir, plan.key)
    if hit is not None:
        return BuildResult(plan.out_dir, hit, cached=True)

    from ..convert.repair import repair
    from ..model import load_model
    from ..model.reference import reference_name, reference_outputs

    started = time.time()
    progress(f"loading {plan.model_path}")
    info = load_model(plan.model_path, opts.input_shapes or None)
    with _staging(plan.out_dir) as stage, tempfile.TemporaryDirectory(prefix="edgeyard-convert-") as workdir:
        # Quantized (on request, or for an int8-only backend) from the float model in the backend's format;
        # the quantized model is then the model the reference runs and the bundle is validated against.
        source, quantization = info, None
        if plan.quantization is not None:
            from ..convert.quantize import quantize_for_build

            float_model = _in_backend_format(source, plan.backend, Path(workdir), progress)
            info, quantization = quantize_for_build(source, float_model, plan.quantization, plan.data,
                                                    Path(workdir), progress)
        compiled = _in_backend_format(info, plan.backend, Path(workdir), progress)
        compiled, repairs = repair(compiled, Path(workdir), progress)
        _check_ops(info, compiled, plan.backend, plan.target, source.path)
        bundle_dir = stage / BUNDLE
        bundle_dir.mkdir()
        progress(f"compiling with {plan.backend.name} for {plan.target.name}")
        manifest = plan.backend.compile(backends.base.CompileRequest(compiled, plan.target, bundle_dir, progress))

        inputs = validate.make_inputs(info, opts.samples, plan.data)
        progress(f"running the reference ({reference_name(info)}) on {opts.samples} samples")
        reference = reference_outputs(info, inputs.tensors)
        runner, why = runners.select(plan.target, entry_of(manifest))
        if runner is None:
            validation = validate.not_run(_why_not_run(why, manifest), opts.samples)
            timing = bench.bench_section(None, [], 0, opts.threads)
        else:
            progress(f"running the bundle on {runner.name} ({opts.samples} samples, {bench.BUILD_RUNS} timed runs)")
            result = runners.run_bundle(runner, plan.target, bundle_dir, manifest, inputs.tensors,
                                        bench.BUILD_WARMUP, bench.BUILD_RUNS, opts.threads, count_instructions=True)
            validation = validate.compare(result.outputs, reference, compiled.outputs, inputs.labels,
                                          manifest.get("tolerance") or (quantization or {}).get("validation_tolerance"))
            timing = bench.bench_section(runner, result.timings_ns, bench.BUILD_WARMUP, opts.threads,
                                         result.instructions_per_inference)
        validation.update(inputs=inputs.source, reference=reference_name(info))
        if validation["ran"] and not validation["passed"]:
            raise BuildError(f"validation failed for {plan.backend.name} on {plan.target.name}: "
                             f"{validate.failure_summary(validation)}.")
        if quantization is not None:  # what quantizing cost, on the whole labelled set
            from .accuracy import accuracy_change

            quantization.update(accuracy_change(float_model, info, plan.quantization.eval_data, plan.data, progress))
        result_report = {
            "edgeyard": __version__,
            "cache_key": plan.key,
            "target": plan.target.name,
            "out_dir": str(plan.out_dir),
            "model": {**source.to_dict(), "compiled_format": compiled.format, "repairs": [*source.repairs, *repairs]},
            "quantization": quantization,
            "backend": plan.backend.name,
            "artifacts": [{**f, "path": f"{BUNDLE}/{f['path']}"} for f in manifest["files"]],
            "validation": validation,
            "bench": timing,
            "memory": manifest.get("memory"),  # bare-metal bundles: flash and RAM from the ELF; Linux: None
            # Backend figures, each labelled: Vela's estimate, the GPU device code, the FPGA design,
            # the static driver of a Linux board without a TVM runtime.
            **{key: manifest[key] for key in ("estimate", "cuda", "fpga", "static_driver") if key in manifest},
            "toolchain": plan.versions,
            "build_seconds": round(time.time() - started, 2),
        }
        report.write(stage, result_report)
    return BuildResult(plan.out_dir, result_report, cached=False)


class AllBackendsFailed(EdgeyardError):
    """--backend auto: no backend of the target built and validated the model; `attempts` says why for each."""

    def __init__(self, message: str, exit_code: int, attempts: list[dict]):
        super().__init__(message, exit_code)
        self.attempts = attempts


def _build_first_that_works(opts: BuildOptions, progress: Progress) -> BuildResult:
    """--backend auto: build() with each of the target's backends in its order of preference until one imports,
    compiles and validates the model; a missing tool stops it (the install hint beats a silent fallback). That build becomes the auto folder's (build/<target>/<stem>/auto/ or
    --out), and its report lists every backend tried with what stopped it ("attempts")."""
    target = target_of(opts)
    plans = [_plan(replace(opts, backend=name)) for name in target.backends]  # option mistakes fail here, once
    out_dir = build_dir_for(target.name, str(plans[0].model_path), AUTO, opts.out)
    key = hashlib.sha256(" ".join([AUTO, *(plan.key for plan in plans)]).encode()).hexdigest()
    hit = cache.cached_report(out_dir, key)
    if hit is not None:
        return BuildResult(out_dir, hit, cached=True)
    started = time.time()
    attempts, failures, chosen = [], [], None
    with _staging(out_dir) as stage:
        for name in target.backends:
            progress(f"auto: trying backend {name}")
            attempt_dir = stage / f"attempt-{name}"
            try:
                built = build(replace(opts, backend=name, out=attempt_dir), progress)
            except MissingTool:
                # A set-up problem, not the model's: falling back would hide it (and cache the fallback).
                raise
            except EdgeyardError as err:
                progress(f"auto: {name} stopped: {err}")
                attempts.append({"backend": name, "error": str(err)})
                failures.append(err)
                continue
            attempts.append({"backend": name, "error": None})
            for item in attempt_dir.iterdir():
                item.rename(stage / item.name)
            attempt_dir.rmdir()
            chosen = {**built.report, "cache_key": key, "out_dir": str(out_dir), "attempts": attempts,
                      "build_seconds": round(time.time() - started, 2)}
            report.write(stage, chosen)
            break
        if chosen is None:
            raise _all_failed(target.name, plans[0].model_path, attempts, failures)
    return BuildResult(out_dir, chosen, cached=False)


def _all_failed(target: str, model_path: Path, attempts: list[dict],
                failures: list[EdgeyardError]) -> AllBackendsFailed:
    """One error for every backend's failure: a shared reason (an unreadable model) once, else each backend's."""
    reasons = {short_reason(str(err), model_path) for err in failures}
    detail = reasons.pop() if len(reasons) == 1 else "; ".join(
        f"{a['backend']}: {short_reason(a['error'], model_path)}" for a in attempts)
    codes = {err.exit_code for err in failures}
    return AllBackendsFailed(f"no backend of {target} could build {model_path.name}: {detail}.",
                             codes.pop() if len(codes) == 1 else EXIT_BUILD_FAILED, attempts)


def _probe_inputs(manifest: dict, bundle_dir: Path) -> list:
    """One seeded random sample for timing, shaped from the bundle's own manifest (no model loading)."""
    specs = [TensorInfo(t["name"], tuple(t["shape"]), t["dtype"]) for t in manifest["inputs"]]
    probe = ModelInfo(path=bundle_dir, format=manifest["backend"], sha256="", inputs=specs, outputs=[])
    return validate.make_inputs(probe, samples=1).tensors


@dataclass
class _Timed:
    """A built bundle ready to be timed, and the timings gathered so far."""

    built: BuildResult
    runner: object
    manifest: dict
    inputs: list
    timings_ns: list = field(default_factory=list)
    instructions: int | None = None

    @classmethod
    def prepare(cls, built: BuildResult, target: Target, connection: runners.Connection | None = None) -> "_Timed":
        bundle_dir = built.out_dir / BUNDLE
        manifest = read_manifest(bundle_dir)
        runner, why = runners.select(target, entry_of(manifest), connection)
        if runner is None:
            raise BuildError(f"cannot benchmark the {manifest['backend']} bundle for {target.name}: "
                             f"{_why_not_run(why, manifest)}.")
        return cls(built, runner, manifest, _probe_inputs(manifest, bundle_dir))

    def run(self, target: Target, warmup: int, runs: int, threads: int, count_instructions: bool) -> None:
        result = runners.run_bundle(self.runner, target, self.built.out_dir / BUNDLE, self.manifest, self.inputs,
                                    warmup, runs, threads, count_instructions=count_instructions)
        self.timings_ns += result.timings_ns
        self.instructions = result.instructions_per_inference if count_instructions else self.instructions

    def record(self, warmup: int, threads: int) -> BuildResult:
        section = bench.bench_section(self.runner, self.timings_ns, warmup, threads, self.instructions)
        updated = {**self.built.report, "bench": section}
        report.write(self.built.out_dir, updated)
        return BuildResult(self.built.out_dir, updated, cached=self.built.cached)


def _check_bench_options(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise BadInput(f"--runs must be at least 1 and --warmup at least 0 (got {runs} and {warmup}).")


def run_bench(opts: BuildOptions, runs: int = bench.DEFAULT_RUNS, warmup: int = bench.DEFAULT_WARMUP,
              progress: Progress = quiet, connection: runners.Connection | None = None) -> BuildResult:
    """Build if needed, then time `runs` inferences after `warmup` and update the folder's report.

    With a connection the timed runs happen on that board (SSH) or device farm (TVM RPC) instead of
    the target's own runner; the build and its validation still run here first."""
    _check_bench_options(runs, warmup)
    target = target_of(opts)
    timed = _Timed.prepare(build(opts, progress), target, connection)
    progress(f"timing {runs} runs after {warmup} warm-up runs on {timed.runner.name}")
    timed.run(target, warmup, runs, opts.threads, count_instructions=True)
    return timed.record(warmup, opts.threads)


def compare_backends(opts: BuildOptions, runs: int = bench.DEFAULT_RUNS, warmup: int = bench.DEFAULT_WARMUP,
                     rounds: int = bench.COMPARE_ROUNDS, progress: Progress = quiet,
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
            built = build(backend_opts, progress)
            out_root = out_root or built.out_dir.parent
            rows.append({"backend": name, "out_dir": str(built.out_dir), "error": None})
            if built.report["validation"]["ran"]:
                timed.append(_Timed.prepare(built, target, connection))
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
