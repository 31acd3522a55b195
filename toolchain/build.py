"""The build pipeline: target + model -> (convert) -> backend bundle -> run -> validate -> time -> report.

Every stage takes plain data and returns plain data; only tasks.py prints. A build is staged in a
temporary sibling folder and moved into place when complete, so a failure leaves nothing behind
and an older good build stays untouched.
"""

import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Callable

from . import __version__, backends, bench, cache, report, runners, validate
from .bundle import entry_of, read_manifest
from .errors import BadInput, BuildError, EdgeyardError
from .model import model_sha256
from .model.info import ModelInfo, TensorInfo
from .paths import build_dir_for
from .target_settings import with_settings
from .targets import Target, load_target

Progress = Callable[[str], None]
BUNDLE = "bundle"


def _quiet(_: str) -> None:
    pass


@dataclass
class BuildOptions:
    target: str
    model: Path | None = None  # None: the embedded default model
    backend: str | None = None  # None: the target's default backend
    out: Path | None = None  # None: build/<target>/<model-stem>/<backend>/
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    data: Path | None = None  # .npz with x/y (or x_test/y_test) for validation inputs and accuracy
    samples: int = validate.DEFAULT_SAMPLES
    threads: int = 1
    quantize: str | None = None  # "int8": full-integer post-training quantization, calibrated on `data`
    settings: dict[str, object] = field(default_factory=dict)  # changes to the target profile (--set, --precision)


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


def _target(opts: BuildOptions) -> Target:
    return with_settings(load_target(opts.target), opts.settings)


def _plan(opts: BuildOptions) -> _Plan:
    target = _target(opts)
    backend_name = opts.backend or target.default_backend
    backend = backends.get(backend_name)
    if backend_name not in target.backends:
        why = (target.unavailable_backends or {}).get(backend_name)
        raise BadInput(f"backend '{backend_name}' does not serve target '{target.name}': {why}." if why else
                       f"backend '{backend_name}' does not serve target '{target.name}' "
                       f"(its backends: {', '.join(target.backends)}).")
    if opts.samples < 1:
        raise BadInput(f"--samples must be at least 1, not {opts.samples}.")
    if opts.quantize not in (None, "int8"):
        raise BadInput(f"--quantize takes int8, not '{opts.quantize}'.")
    data = opts.data
    if opts.model is None:
        from .model.default import default_model

        model_path, default_data = default_model()
        data = data or default_data
    else:
        model_path = Path(opts.model)  # model_format() below says so when it is missing
    if data is not None and not Path(data).is_file():
        raise BadInput(f"{data}: dataset file not found.")
    if opts.quantize and data is None:
        raise BadInput("--quantize int8 needs calibration data: --data FILE.npz (x_train, x or x_test).")
    out_dir = build_dir_for(target.name, str(model_path), backend_name, opts.out)
    from .model import model_format
    from .model.reference import FRAMEWORKS, framework_versions

    versions = {"edgeyard": __version__, **backend.versions(),
                **framework_versions(FRAMEWORKS[model_format(model_path)])}
    options = {"input_shapes": opts.input_shapes, "samples": opts.samples, "threads": opts.threads,
               "quantize": opts.quantize,
               "data": model_sha256(Path(data)) if data else None}
    key = cache.build_key(model_sha256(model_path), target.sha256, backend_name, options, versions)
    return _Plan(target, backend, model_path, Path(data) if data else None, out_dir, key, versions)


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
    from . import convert

    for fmt in backend.formats:
        if fmt == "tflite" and info.format in ("keras", "savedmodel"):
            progress(f"converting {info.format} to TFLite")
            return convert.to_tflite(info, workdir)
        if fmt == "onnx" and info.format in ("keras", "savedmodel", "tflite"):
            progress(f"converting {info.format} to ONNX")
            return convert.to_onnx(info, workdir)
    raise BadInput(f"{info.path}: backend '{backend.name}' compiles {' or '.join(backend.formats)} models and "
                   f"cannot take a {info.format} model; try another backend.")


def _check_ops(info: ModelInfo, compiled: ModelInfo, backend, target: Target) -> None:
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
    raise BadInput(f"{info.path}: backend '{backend.name}' cannot import op{'s' if len(unsupported) > 1 else ''} "
                   f"{ops}{hint}.")


def _why_not_run(runner_reasons: str, manifest: dict) -> str:
    """Why no runner could run the bundle: the runners' reasons, else the backend's (e.g. no GPU here)."""
    return runner_reasons or manifest.get("not_run", "no runner of the target is available")


def build(opts: BuildOptions, progress: Progress = _quiet) -> BuildResult:
    plan = _plan(opts)
    hit = cache.cached_report(plan.out_dir, plan.key)
    if hit is not None:
        return BuildResult(plan.out_dir, hit, cached=True)

    from .model import load_model
    from .model.reference import reference_name, reference_outputs

    started = time.time()
    progress(f"loading {plan.model_path}")
    info = load_model(plan.model_path, opts.input_shapes or None)
    with _staging(plan.out_dir) as stage, tempfile.TemporaryDirectory(prefix="edgeyard-convert-") as workdir:
        # Quantized on request, or for a backend that runs int8 only when there is data to calibrate with.
        # The quantized model is then the model the reference runs and the bundle is validated against.
        source = info
        needs_int8 = getattr(plan.backend, "needs_int8", False) and info.format in ("keras", "savedmodel")
        if opts.quantize == "int8" or (needs_int8 and plan.data is not None):
            from .convert import int8

            progress(f"quantizing {info.path.name} to int8, calibrated on {plan.data.name}")
            info = int8.to_int8_tflite(info, Path(workdir), int8.calibration_inputs(plan.data, info))
        compiled = _in_backend_format(info, plan.backend, Path(workdir), progress)
        _check_ops(info, compiled, plan.backend, plan.target)
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
                                          manifest.get("tolerance"))
            timing = bench.bench_section(runner, result.timings_ns, bench.BUILD_WARMUP, opts.threads,
                                         result.instructions_per_inference)
        validation.update(inputs=inputs.source, reference=reference_name(info))
        if validation["ran"] and not validation["passed"]:
            raise BuildError(f"validation failed for {plan.backend.name} on {plan.target.name}: "
                             f"{validate.failure_summary(validation)}.")
        result_report = {
            "edgeyard": __version__,
            "cache_key": plan.key,
            "target": plan.target.name,
            "out_dir": str(plan.out_dir),
            "model": {**source.to_dict(), "compiled_format": compiled.format,
                      "quantized": f"int8, calibrated on {plan.data.name}" if info is not source else None},
            "backend": plan.backend.name,
            "artifacts": [{**f, "path": f"{BUNDLE}/{f['path']}"} for f in manifest["files"]],
            "validation": validation,
            "bench": timing,
            "memory": manifest.get("memory"),  # bare-metal bundles: flash and RAM from the ELF; Linux: None
            # Backend figures, each labelled: Vela's estimate, the GPU device code, the FPGA design.
            **{key: manifest[key] for key in ("estimate", "cuda", "fpga") if key in manifest},
            "toolchain": plan.versions,
            "build_seconds": round(time.time() - started, 2),
        }
        report.write(stage, result_report)
    return BuildResult(plan.out_dir, result_report, cached=False)


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
              progress: Progress = _quiet, connection: runners.Connection | None = None) -> BuildResult:
    """Build if needed, then time `runs` inferences after `warmup` and update the folder's report.

    With a connection the timed runs happen on that board (SSH) or device farm (TVM RPC) instead of
    the target's own runner; the build and its validation still run here first."""
    _check_bench_options(runs, warmup)
    target = _target(opts)
    timed = _Timed.prepare(build(opts, progress), target, connection)
    progress(f"timing {runs} runs after {warmup} warm-up runs on {timed.runner.name}")
    timed.run(target, warmup, runs, opts.threads, count_instructions=True)
    return timed.record(warmup, opts.threads)


def compare_backends(opts: BuildOptions, runs: int = bench.DEFAULT_RUNS, warmup: int = bench.DEFAULT_WARMUP,
                     rounds: int = bench.COMPARE_ROUNDS, progress: Progress = _quiet,
                     connection: runners.Connection | None = None) -> dict:
    """Build and time every backend of the target side by side.

    Runs are interleaved in `rounds` (each backend in turn, every round), so a noisy machine slows
    all backends alike. A backend that cannot build is a row with its reason, not a failure.
    Writes comparison.json and comparison.md beside the backends' build folders; returns the comparison.
    """
    _check_bench_options(runs, warmup)
    target = _target(opts)
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
