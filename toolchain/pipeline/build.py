"""The build pipeline: plan -> ingest and convert -> compile -> run and validate -> measure -> report.

Each stage is a function taking the previous stage's typed result (_Plan, _Converted, CompileResult,
_Ran) and returning its own; only tasks.py prints. A build is staged in a temporary sibling folder
and moved into place when complete (atomic.staged_dir). `--backend auto` is _build_fastest.
Timing a built bundle again (`invoke bench`) is pipeline/bench.py.
"""

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .. import __version__, backends, encryption, runners, signing
from ..atomic import scratch_dir, staged_dir
from ..backends.base import Backend, CompileRequest, CompileResult
from ..bundle import BUNDLE, entry_of, is_build_folder
from ..console import Progress, quiet
from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_BUILD_FAILED,
    BadInput,
    BuildError,
    EdgeyardError,
    MissingTool,
    short_reason,
)
from ..model import TORCH_FORMATS, model_format, model_sha256
from ..model.data import load_npz
from ..model.info import ModelInfo
from ..options import MAX_SAMPLES, MAX_THREADS, BuildOptions, parse_count
from ..paths import build_dir_for
from ..target.profile import AUTO_BACKEND, Target, load_target
from ..target.settings import with_settings
from . import cache, report, stats, validate
from .timing import NO_RUNNER, Timed, interleaved

AUTO = AUTO_BACKEND  # --backend auto: every backend of the target built, validated and measured; the fastest ships


@dataclass
class BuildResult:
    out_dir: Path
    report: dict
    cached: bool


@dataclass
class _Plan:
    """Everything a build is decided by, known before any heavy work."""

    target: Target
    backend: Backend
    model_path: Path
    data: Path | None
    out_dir: Path
    key: str
    versions: dict
    options: dict  # what the cache key and the provenance record of the options
    signing_key: Path | None
    quantization: object = None  # convert.quantize.Request, or None
    model_key: Path | None = None  # --encrypt's AES-256 key file
    tuning_db: Path | None = None  # tvm: where the tuning databases are (None: the cache's)
    precision_search: object = None  # pipeline.fpga_precision.Search (--precision auto), or None


def target_of(opts: BuildOptions) -> Target:
    """The build's target profile with its --set changes."""
    return with_settings(load_target(opts.target), opts.settings)


def checked_out_dir(out_dir: Path) -> Path:
    """The build folder, once it is clear that writing it loses nothing of the user's: a build replaces its
    folder whole, so an existing one must be empty or an edgeyard build (BadInput). A path without a name
    of its own (".", "..", "x/..") comes back absolute."""
    normal = Path(os.path.normpath(out_dir))
    out_dir = Path(os.path.abspath(out_dir))
    if out_dir == out_dir.parent:
        raise BadInput(f"{out_dir} cannot be a build folder; give --out a folder below it.")
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir} is a file, not a build folder; give --out a new or empty folder.")
    if out_dir.is_dir() and not is_build_folder(out_dir) and any(out_dir.iterdir()):
        raise BadInput(f"{out_dir} holds files and no edgeyard build (no report.json or {BUNDLE}/manifest.json), "
                       "and a build replaces its folder whole; give --out a new or empty folder.")
    ancestor = next(p for p in out_dir.parents if p.exists())
    if not ancestor.is_dir():
        raise BadInput(f"{ancestor} is a file, so the build folder {out_dir} cannot be made there.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BadInput(f"{ancestor} is not writable, so the build folder {out_dir} cannot be made there.")
    return normal if normal.name not in ("", "..") else out_dir


def _plan(opts: BuildOptions, progress: Progress = quiet) -> _Plan:
    if opts.out is not None:  # before any work (the default model's training included)
        checked_out_dir(opts.out)
    target = target_of(opts)
    backend_name = opts.backend or target.default_backend
    backend = backends.get(backend_name)
    if backend_name not in target.backends:
        why = (target.unavailable_backends or {}).get(backend_name)
        raise BadInput(f"backend '{backend_name}' does not serve target '{target.name}': {why}." if why else
                       f"backend '{backend_name}' does not serve target '{target.name}' "
                       f"(its backends: {', '.join(target.backends)}).")
    if opts.encrypt is not None:
        _check_encryption(opts.encrypt, target, backend)
    parse_count("--samples", opts.samples, 1, MAX_SAMPLES)  # the API's BuildOptions skip build_options()
    parse_count("--threads", opts.threads, 1, MAX_THREADS)
    from ..convert.quantize import plan as quantization_plan

    # Before the default model is built: option mistakes fail at once.
    search = None
    if opts.auto_precision:
        from .fpga_precision import plan as precision_plan

        search = precision_plan(target, backend_name, opts.accuracy_budget, opts.eval_data, opts.calibration)
    # --precision auto takes the data and budget options itself; --quantize does not apply to hls4ml's Keras input
    calibration, eval_data, budget = (None, None, None) if search else (opts.calibration, opts.eval_data,
                                                                        opts.accuracy_budget)
    quantization = quantization_plan(opts.quantize, opts.quantize_io, calibration, eval_data, opts.model,
                                     backend, has_data=opts.data is not None or opts.model is None,
                                     accuracy_budget=budget)
    signing_key = signing.signing_key_path(opts.signing_key)
    data = opts.data
    if opts.model is None:
        from ..model.default import default_model

        model_path, default_data = default_model(progress)
        data = data or default_data
    else:
        model_path = Path(opts.model)  # model_format() below says so when it is missing
    if data is not None:
        load_npz(Path(data))  # its arrays checked now, before any heavy work
    out_dir = checked_out_dir(build_dir_for(target.name, str(model_path), backend_name, opts.out))
    from ..convert import repair
    from ..model import model_format
    from ..model.reference import MICROCONTROLLER_FALLBACK, FRAMEWORKS, framework_versions

    framework = backend.caps.reference or FRAMEWORKS[model_format(model_path)]
    fallback = MICROCONTROLLER_FALLBACK.get(framework) if target.os == "none" else None
    versions = {"edgeyard": __version__, **backend.versions(), **repair.versions(), **framework_versions(framework),
                **(framework_versions(fallback) if fallback else {})}
    options = {"input_shapes": opts.input_shapes, "samples": opts.samples, "threads": opts.threads,
               **_tvm_options(target, backend_name, opts.tuning_db),
               "quantization": quantization.cache_key() if quantization else None,
               **({"precision_search": search.cache_key()} if search else {}),
               "data": model_sha256(Path(data)) if data else None,
               **({"encryption": encryption.ALGORITHM} if opts.encrypt else {})}
    signer = signing.fingerprint(signing_key) if signing_key else None  # another key: another build
    keyed = {**options, "signer": signer}
    if opts.encrypt:
        encryption.check_outside(opts.encrypt, out_dir)
        keyed["model_key"] = encryption.key_id(opts.encrypt)  # likewise
    key = cache.build_key(model_sha256(model_path), target.sha256, backend_name, keyed, versions)
    return _Plan(target, backend, model_path, Path(data) if data else None, out_dir, key, versions, options,
                 signing_key, quantization, opts.encrypt, opts.tuning_db, search)


def _check_encryption(key_path: Path, target: Target, backend: Backend) -> None:
    """--encrypt: BadInput unless the backend stores models encrypted (never on a microcontroller, whose image
    runs in place from flash) and the key file holds an AES-256 key."""
    if target.os == "none":
        raise BadInput(f"--encrypt applies to Linux boards; {target.name} is a microcontroller, whose firmware "
                       "runs in place from flash (MCUboot's image encryption is not supported yet).")
    if not backend.caps.encrypts:
        able = [name for name in target.backends if backends.get(name).caps.encrypts]
        hint = f"give --backend {' or --backend '.join(able)}" if able else f"no backend of {target.name} can"
        raise BadInput(f"backend '{backend.name}' cannot store the model encrypted (--encrypt); {hint}.")
    encryption.read_key(key_path)


def _tvm_options(target: Target, backend_name: str, tuning_db: Path | None) -> dict:
    """What else decides a tvm build, cheaply (no TVM import): the CPU that mcpu "host" names, and the tuning
    database the build applies (its fingerprint: a new tuning run makes a new build)."""
    if backend_name != "tvm":
        return {}
    from ..backends.tvm.tuning import database_fingerprint
    from ..hostenv.host_cpu import resolved

    return {"tvm_target": resolved(target.tvm_target), "tuning": database_fingerprint(target, tuning_db)}


def _in_backend_format(info: ModelInfo, backend, workdir: Path, progress: Progress) -> ModelInfo:
    """The model in a format the backend compiles: as given, or converted (Keras -> TFLite, TF or PyTorch -> ONNX,
    Keras -> torch.export program)."""
    if info.format in backend.caps.formats:
        return info
    from .. import convert

    for fmt in backend.caps.formats:
        if fmt == "tflite" and info.format in ("keras", "savedmodel"):
            progress(f"converting {info.format} to TFLite")
            return convert.to_tflite(info, workdir)
        if fmt == "onnx" and info.format in ("keras", "savedmodel", "tflite", *TORCH_FORMATS):
            progress(f"converting {info.format} to ONNX")
            return convert.to_onnx(info, workdir)
        if fmt == "torch-export" and info.format == "keras":
            progress("converting keras to a torch.export program (Keras on PyTorch)")
            return convert.to_torch_export(info, workdir)
    raise BadInput(f"{info.path}: backend '{backend.name}' compiles {' or '.join(backend.caps.formats)} models and "
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
        formats = other.caps.formats
        candidate = info if info.format in formats else compiled if compiled.format in formats else None
        if candidate is not None and not other.unsupported_ops(candidate):
            able.append(name)
    hint = f"; try --backend {' or --backend '.join(able)}" if able else ""
    ops = ", ".join(unsupported)
    raise BadInput(f"{model_path}: backend '{backend.name}' cannot import op{'s' if len(unsupported) > 1 else ''} "
                   f"{ops}{hint}.")


@dataclass
class _Converted:
    """The model as the backend compiles it, and what it took to get there."""

    source: ModelInfo  # the user's model, as loaded
    model: ModelInfo  # the model the reference runs and the bundle is validated against (quantized, if asked)
    compiled: ModelInfo  # `model` in the backend's format, repaired
    repairs: list[str]
    float_model: ModelInfo | None = None  # the float model in the backend's format, when quantized
    quantization: dict | None = None  # the report's quantization section


@dataclass
class _Ran:
    """The bundle's validation against the reference, and the build's quick timing (or why it could not run)."""

    validation: dict
    timing: dict
    profile: list[dict] | None = None  # per layer, where the bundle reports its layers


def build(opts: BuildOptions, progress: Progress = quiet, refuse_altered: bool = False) -> BuildResult:
    """plan -> ingest and convert -> compile -> run and validate -> measure -> report, staged so that a
    failure leaves nothing behind and an older good build stays untouched.

    A finished build of the same inputs is reused once signing.check_build passes; one with an altered
    file is rebuilt, saying so, or with refuse_altered (bench, deploy: about to run or ship it) refused."""
    with scratch_dir():
        out_dir, key, plans = _folder_and_key(opts, progress)
        hit = _cached(out_dir, key, progress, refuse_altered)
        if hit is not None:
            return hit
        if _is_auto(opts):
            return _build_fastest(opts, out_dir, key, plans[0].model_path, progress)
        return _build_one(opts, plans[0], progress)


def _is_auto(opts: BuildOptions) -> bool:
    return (opts.backend or target_of(opts).default_backend) == AUTO


def _folder_and_key(opts: BuildOptions, progress: Progress = quiet) -> tuple[Path, str, list[_Plan]]:
    """The build folder, the cache key and the plans of a build (--backend auto: one plan per backend of the
    target, so that option mistakes fail here, once); imports no heavy library."""
    if not _is_auto(opts):
        plan = _plan(opts, progress)
        return plan.out_dir, plan.key, [plan]
    target = target_of(opts)
    plans = [_plan(replace(opts, backend=name), progress) for name in target.backends]
    out_dir = checked_out_dir(build_dir_for(target.name, str(plans[0].model_path), AUTO, opts.out))
    return out_dir, hashlib.sha256(" ".join([AUTO, *(plan.key for plan in plans)]).encode()).hexdigest(), plans


def cached_build(opts: BuildOptions) -> BuildResult | None:
    """The build `opts` asks for when its folder already holds it, intact (a cache hit); else None. Cheap: it
    imports no heavy library, so a client can keep cached builds off a cluster."""
    out_dir, key, _ = _folder_and_key(opts)
    hit, _ = cache.cached_report(out_dir, key)
    return None if hit is None else BuildResult(out_dir, hit, cached=True)


def _cached(out_dir: Path, key: str, progress: Progress, refuse_altered: bool) -> BuildResult | None:
    hit, altered = cache.cached_report(out_dir, key)
    if altered and refuse_altered:
        raise BuildError(f"{altered.rstrip('.')}; refusing to use it (run invoke build to make it again).")
    if altered:
        progress(f"rebuilding: {altered}")
    return BuildResult(out_dir, hit, cached=True) if hit is not None else None


def _build_one(opts: BuildOptions, plan: _Plan, progress: Progress) -> BuildResult:
    started = time.time()
    with staged_dir(plan.out_dir) as stage, tempfile.TemporaryDirectory(prefix="edgeyard-convert-") as workdir:
        converted = _convert(plan, opts, Path(workdir), progress)
        chosen = None
        if plan.precision_search is not None:  # --precision auto: the types, measured, before the bundle's build
            from .fpga_precision import choose_widths

            chosen = choose_widths(converted.compiled, plan.target, plan.precision_search, plan.data, Path(workdir),
                                   progress)
            plan = replace(plan, target=chosen.target)
        compiled = _compile(plan, converted, stage / BUNDLE, progress)
        if chosen is not None:
            compiled.sections.insert(0, chosen.section)
        ran = _run_and_validate(plan, opts, converted, compiled, stage / BUNDLE, progress)
        if converted.quantization is not None:  # what quantizing cost, on the whole labelled set
            from .accuracy import accuracy_change

            converted.quantization.update(accuracy_change(converted.float_model, converted.model,
                                                          plan.quantization.eval_data, plan.data, progress))
        trust = _sign(plan, converted, compiled, stage, progress)
        result_report = {**_report(plan, converted, compiled, ran, started), "trust": trust}
        report.write(stage, result_report)
    return BuildResult(plan.out_dir, result_report, cached=False)


def _convert(plan: _Plan, opts: BuildOptions, workdir: Path, progress: Progress) -> _Converted:
    """Load the model, quantize it on request (or for an int8-only backend), convert it to the backend's
    format and repair what its importer would trip on; fail naming the ops the backend cannot take."""
    from ..convert.repair import repair
    from ..model import load_model

    progress(f"loading {plan.model_path}")
    source = load_model(plan.model_path, opts.input_shapes or None)
    model, float_model, quantization = source, None, None
    if plan.quantization is not None:
        from ..convert.quantize import quantize_for_build

        float_model = _in_backend_format(source, plan.backend, workdir, progress)
        model, quantization = quantize_for_build(source, float_model, plan.quantization, plan.data, workdir, progress)
    compiled, repairs = repair(_in_backend_format(model, plan.backend, workdir, progress), workdir, progress)
    _check_ops(model, compiled, plan.backend, plan.target, source.path)
    return _Converted(source, model, compiled, repairs, float_model, quantization)


def compiled_model(opts: BuildOptions, workdir: Path, progress: Progress) -> tuple[ModelInfo, Target]:
    """The model as opts' backend compiles it (planned, loaded, converted, repaired in `workdir`), and the target:
    for a stage that works on a backend's input without building (invoke tune)."""
    plan = _plan(opts, progress)
    return _convert(plan, opts, workdir, progress).compiled, plan.target


def _compile(plan: _Plan, converted: _Converted, bundle_dir: Path, progress: Progress) -> CompileResult:
    bundle_dir.mkdir()
    progress(f"compiling with {plan.backend.name} for {plan.target.name}")
    compiled = plan.backend.compile(CompileRequest(converted.compiled, plan.target, bundle_dir, progress,
                                                   plan.signing_key, plan.model_key, plan.tuning_db))
    memory = next((section.data for section in compiled.sections if section.key == "memory"), None)
    if memory is not None and converted.compiled.format == "tflite":
        memory.update(_tflm_arena(converted.compiled.path, progress))
    return compiled


def _tflm_arena(model: Path, progress: Progress) -> dict:
    """A microcontroller build's yardstick beside its arena_bytes: TFLite Micro's minimum arena for the same
    model (about 0.5 s), or why it could not be measured."""
    from ..model.tflm_arena import minimum_arena_bytes

    progress("measuring TFLite Micro's minimum arena for the same model")
    try:
        return {"tflm_arena_bytes": minimum_arena_bytes(model), "tflm_arena_unavailable": None}
    except BuildError as err:  # a comparison figure: its absence must not fail the build
        return {"tflm_arena_bytes": None, "tflm_arena_unavailable": str(err)}


def _run_and_validate(plan: _Plan, opts: BuildOptions, converted: _Converted, compiled: CompileResult,
                      bundle_dir: Path, progress: Progress) -> _Ran:
    """Run the reference and the bundle on the same inputs, compare them, and keep the build's quick timing."""
    from ..model.reference import reference_name, run_reference

    model, manifest = converted.model, compiled.manifest
    inputs = validate.make_inputs(model, opts.samples, plan.data)
    framework = reference_name(model, plan.backend.caps.reference)
    progress(f"running the reference ({framework}) on {opts.samples} samples")
    ran_reference = run_reference(model, inputs.tensors, framework, microcontroller=plan.target.os == "none")
    if ran_reference.note:
        progress(f"reference: {ran_reference.note}")
    reference = ran_reference.outputs
    runner, why = runners.select(plan.target, entry_of(manifest))
    profile = None
    if runner is None:
        validation = validate.not_run(why or compiled.not_run or NO_RUNNER, opts.samples)
        timing = stats.bench_section(None, [], 0, opts.threads)
    else:
        progress(f"running the bundle on {runner.name} ({opts.samples} samples, {stats.BUILD_RUNS} timed runs)")
        result = runners.run_bundle(runner, plan.target, bundle_dir, manifest, inputs.tensors,
                                    stats.BUILD_WARMUP, stats.BUILD_RUNS, opts.threads, count_instructions=True,
                                    env=encryption.runner_env(plan.model_key))
        tolerance = compiled.tolerance or (converted.quantization or {}).get("validation_tolerance")
        validation = validate.compare(result.outputs, reference, converted.compiled.outputs, inputs.labels, tolerance)
        timing = stats.bench_section(runner, result.timings_ns, stats.BUILD_WARMUP, opts.threads, result.count)
        profile = stats.layer_profile(manifest.get("firmware", {}).get("layers"), result.layer_counts,
                                      runner.caps.emulated)
    validation.update(inputs=inputs.source, reference=ran_reference.framework, reference_note=ran_reference.note)
    if validation["ran"] and not validation["passed"]:
        raise BuildError(f"validation failed for {plan.backend.name} on {plan.target.name}: "
                         f"{validate.failure_summary(validation)}.")
    return _Ran(validation, timing, profile)


def _sign(plan: _Plan, converted: _Converted, compiled: CompileResult, stage: Path, progress: Progress) -> dict:
    """provenance.json, then signature.json when there is a key; report.json's "trust" section."""
    subjects = [{**f, "path": f"{BUNDLE}/{f['path']}"} for f in compiled.manifest["files"]]
    signing.write_provenance(stage, signing.provenance(
        converted.source.path.name, converted.source.sha256, plan.target.name, plan.target.sha256,
        plan.backend.name, plan.options, plan.versions, subjects))
    signer = None
    if plan.signing_key is not None:
        progress(f"signing the manifest and the provenance with {plan.signing_key}")
        signer = signing.sign(stage, plan.signing_key)
    return {"files": signing.trust_records(stage), "signer": signer}


def _report(plan: _Plan, converted: _Converted, compiled: CompileResult, ran: _Ran, started: float) -> dict:
    """report.json's keys (docs/reports.md); each backend section sits under its own key."""
    source = converted.source
    return {
        "edgeyard": __version__,
        "cache_key": plan.key,
        "target": plan.target.name,
        "out_dir": str(plan.out_dir),
        "model": {**source.to_dict(), "compiled_format": converted.compiled.format,
                  "repairs": [*source.repairs, *converted.repairs]},
        "quantization": converted.quantization,
        "backend": plan.backend.name,
        "artifacts": [{**f, "path": f"{BUNDLE}/{f['path']}"} for f in compiled.manifest["files"]],
        "validation": ran.validation,
        "bench": ran.timing,
        "profile": ran.profile,
        "graph": [node.to_dict() for node in converted.compiled.nodes] or None,  # report.html's model graph
        "memory": None,  # bare-metal bundles: flash and RAM (a backend's "memory" section replaces it)
        **{section.key: section.data for section in compiled.sections},
        "sections": [section.to_json() for section in compiled.sections],
        "toolchain": plan.versions,
        "build_seconds": round(time.time() - started, 2),
    }


class AllBackendsFailed(EdgeyardError):
    """--backend auto: no backend of the target built the model; `attempts` holds every candidate's record
    ({backend, error, ...}: report.json's selection.candidates)."""

    def __init__(self, message: str, exit_code: int, attempts: list[dict]):
        super().__init__(message, exit_code)
        self.attempts = attempts


@dataclass
class _Candidate:
    """One backend's build for --backend auto, what stopped it, and what it measured."""

    backend: str
    built: BuildResult | None = None
    error: str | None = None
    exit_code: int = EXIT_BUILD_FAILED
    instructions: int | None = None
    latency_ms: float | None = None
    timed: Timed | None = None  # the interleaved runs, where it was measured by latency

    @property
    def validated(self) -> bool:
        return self.built is not None and self.built.report["validation"]["passed"]

    def record(self) -> dict:
        """Its entry in report.json's selection.candidates."""
        return {"backend": self.backend, "validated": self.validated, "error": self.error,
                "instructions_per_inference": self.instructions, "latency_ms": self.latency_ms}


# Conversions --backend auto does not make for a candidate: a Keras model reaches the torch.export backends
# (executorch) through Keras on PyTorch in a child process and a lowering, about 40 s on 2 cores, which would more
# than double a default build; --backend executorch builds it.
_NOT_IN_AUTO = frozenset({("keras", "torch-export")})


def _candidate(opts: BuildOptions, name: str, model_format: str, stage: Path, progress: Progress) -> _Candidate:
    """build() with one backend: into its own default folder, where a later --backend NAME build (or the next
    auto build) finds it cached; with --out, inside auto's staging folder. Any failure but a missing tool,
    edgeyard's own bugs included, is the candidate's recorded error: auto goes on with the others."""
    formats = backends.get(name).caps.formats
    if model_format not in formats and all((model_format, fmt) in _NOT_IN_AUTO for fmt in formats):
        progress(f"auto: not trying {name}: a {model_format} model needs a slow conversion for it")
        return _Candidate(name, exit_code=EXIT_BAD_INPUT, error=(
            f"--backend auto does not convert a {model_format} model for {name} (it compiles "
            f"{' or '.join(formats)} models and the conversion is slow); build it with --backend {name}."))
    progress(f"auto: building candidate {name}")
    out = stage / f"candidate-{name}" if opts.out is not None else None
    try:
        return _Candidate(name, built=build(replace(opts, backend=name, out=out), progress))
    except MissingTool:
        raise  # a set-up problem, not the model's: the install hint beats a silent fallback (and its cache)
    except EdgeyardError as err:
        error, code = str(err), err.exit_code
    except Exception as err:  # an internal error in one backend must not stop auto from shipping another
        error, code = f"internal error: {type(err).__name__}: {err}", EXIT_BUILD_FAILED
    progress(f"auto: {name} stopped: {error}")
    return _Candidate(name, error=error, exit_code=code)


def _measure(candidates: list[_Candidate], target: Target, threads: int, progress: Progress) -> str | None:
    """Fill in the validated candidates' costs; returns what they are compared by: "instructions" where the
    runner counted every one (emulated boards: deterministic, so the build's own count serves), else "latency"
    from runs interleaved in rounds (noise slows all alike); None when no candidate validated."""
    validated = [c for c in candidates if c.validated]
    if not validated:
        return None
    for candidate in validated:
        bench = candidate.built.report["bench"]
        candidate.instructions = bench["instructions_per_inference"]
        candidate.latency_ms = bench["latency_ms"]["median"] if bench["latency_ms"] else None
    if all(c.instructions for c in validated):
        return "instructions"
    if len(validated) == 1:
        return "latency"
    for candidate in validated:
        candidate.timed = Timed.prepare(candidate.built.out_dir, target)
    progress(f"auto: timing {', '.join(c.backend for c in validated)} side by side")
    interleaved([c.timed for c in validated], target, stats.AUTO_WARMUP, stats.AUTO_RUNS, stats.AUTO_ROUNDS, threads,
                progress, count_instructions=False)
    medians = sorted(stats.latency_ms(c.timed.timings_ns)["median"] for c in validated)
    if medians[1] <= medians[0] * (1 + stats.AUTO_CLOSE_CALL):
        progress(f"auto: the two fastest are within {stats.AUTO_CLOSE_CALL:.0%}: timing every candidate again, "
                 f"{stats.AUTO_CLOSE_CALL_RUNS} runs in {stats.AUTO_CLOSE_CALL_ROUNDS} rounds")
        for candidate in validated:
            candidate.timed.timings_ns = []
        interleaved([c.timed for c in validated], target, stats.AUTO_WARMUP, stats.AUTO_CLOSE_CALL_RUNS,
                    stats.AUTO_CLOSE_CALL_ROUNDS, threads, progress, count_instructions=False)
    for candidate in validated:
        candidate.latency_ms = stats.latency_ms(candidate.timed.timings_ns)["median"]
    return "latency"


def _winner(candidates: list[_Candidate], by: str | None) -> _Candidate | None:
    """The fastest validated candidate (ties: the target's order of preference); with nothing measured, the first
    that built (a target whose bundles cannot run here)."""
    if by is None:
        return next((c for c in candidates if c.built is not None), None)
    validated = [c for c in candidates if c.validated]
    cost = (lambda c: c.instructions) if by == "instructions" else (lambda c: c.latency_ms)
    return min(validated, key=cost)


def _build_fastest(opts: BuildOptions, out_dir: Path, key: str, model_path: Path, progress: Progress) -> BuildResult:
    """--backend auto: build every backend of the target that imports the model, validate each, measure each the
    way the target allows (instructions per inference where the runner counts them, else latency) and ship the
    fastest validated one in the auto folder (build/<target>/<stem>/auto/ or --out). Its report's `selection`
    lists every candidate with its costs or what stopped it."""
    target = target_of(opts)
    started = time.time()
    with staged_dir(out_dir) as stage:
        fmt = model_format(model_path)
        candidates = [_candidate(opts, name, fmt, stage, progress) for name in target.backends]
        by = _measure(candidates, target, opts.threads, progress)
        winner = _winner(candidates, by)
        if winner is None:
            raise _all_failed(target.name, model_path, candidates)
        _take(winner.built.out_dir, stage)
        for candidate in candidates:  # the others' staged folders (with --out) go
            if candidate.built is not None and candidate.built.out_dir.parent == stage and candidate is not winner:
                shutil.rmtree(candidate.built.out_dir)
        bench = winner.timed.section(stats.AUTO_WARMUP, opts.threads) if winner.timed else winner.built.report["bench"]
        chosen = {**winner.built.report, "bench": bench, "cache_key": key, "out_dir": str(out_dir),
                  "selection": {"by": by, "candidates": [c.record() for c in candidates]},
                  "build_seconds": round(time.time() - started, 2)}
        report.write(stage, chosen)
    return BuildResult(out_dir, chosen, cached=False)


def _take(build_folder: Path, stage: Path) -> None:
    """The winner's build folder as the stage's contents: moved when staged there, else copied (it stays the
    cached build of its own backend)."""
    for item in build_folder.iterdir():
        if build_folder.parent == stage:
            item.rename(stage / item.name)
        elif item.is_dir():
            shutil.copytree(item, stage / item.name, symlinks=True)
        else:
            shutil.copy2(item, stage / item.name)
    if build_folder.parent == stage:
        build_folder.rmdir()


def _all_failed(target: str, model_path: Path, candidates: list[_Candidate]) -> AllBackendsFailed:
    """One error for every backend's failure: a shared reason (an unreadable model) once, else each backend's."""
    reasons = {short_reason(c.error, model_path) for c in candidates}
    detail = reasons.pop() if len(reasons) == 1 else "; ".join(
        f"{c.backend}: {short_reason(c.error, model_path)}" for c in candidates)
    codes = {c.exit_code for c in candidates}
    return AllBackendsFailed(f"no backend of {target} could build {model_path.name}: {detail}.",
                             codes.pop() if len(codes) == 1 else EXIT_BUILD_FAILED, [c.record() for c in candidates])
