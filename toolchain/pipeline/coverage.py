"""invoke coverage: every model in a folder built for every target, as a matrix of what validated with which backend.

Each (model, target, backend) entry of the matrix is one build() (--backend auto by default, so a cell
says which backend won and what stopped the ones before it); `invoke matrix` plans, shards and merges
the same entries (pipeline/matrix.py). A failing model is a failed cell, never the end of the run.
Builds go to <out>/<target>/<model file name>/<backend>/ (the whole file name: kws.tflite and the
SavedModel folder kws must not share a folder), so a second run is a cache hit per cell; the matrix
goes to <out>/coverage.json and coverage.md. The builds run through pipeline/jobs.py: on a local
process pool (--jobs) or as tasks on a Dask cluster (--scheduler), where each build asks for the
worker resources its target's runners need and comes back to this machine as a packed folder.
"""

import io
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .. import backends, runners
from ..atomic import staged_dir
from ..console import Progress, quiet
from ..errors import BadInput, EdgeyardError, short_reason
from ..model import SUFFIX_FORMATS
from ..options import DEFAULT_SAMPLES, BuildOptions
from ..target.profile import Target, load_target
from . import report
from .build import AUTO, AllBackendsFailed, BuildResult, build, cached_build, target_of
from .jobs import LOCAL, Job, run_jobs
from .validate import NOT_RUN

DEFAULT_OUT = Path("build") / "coverage"
DEFAULT_MODEL = "default"  # a matrix row without --models: the embedded default model
REASON_CHARS = 90  # a matrix cell shortens each backend's reason to this; coverage.json keeps the whole message


@dataclass(frozen=True, order=True)
class MatrixEntry:
    """One build of a coverage matrix: a model of the folder (its file name), a target, a backend."""

    model: str
    target: str
    backend: str

    def to_json(self) -> dict:
        return asdict(self)


def model_entries(folder: Path) -> list[Path]:
    """The models in `folder`, sorted: files of a known format and SavedModel folders; anything else is skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"{folder} is not a folder of models.")
    entries = [
        path for path in sorted(folder.iterdir())
        if not path.name.startswith(".")
        and ((path.is_file() and path.suffix.lower() in SUFFIX_FORMATS)
             or (path.is_dir() and (path / "saved_model.pb").is_file()))
    ]  # fmt: skip
    if not entries:
        raise BadInput(f"{folder} holds no models (.keras, .h5, .tflite or .onnx files, or SavedModel folders).")
    return entries


def plan(models: Path | None, targets: list[str], backend_names: list[str]) -> list[MatrixEntry]:
    """Every (model, target, backend) the matrix builds, in a fixed order: models sorted, then targets and
    backends in the order given; a backend only for the targets it serves (auto serves all)."""
    if not targets:
        raise BadInput("--targets names no target; give e.g. --targets host,rpi4.")
    if not backend_names:
        raise BadInput("--backends names no backend; give e.g. --backends auto.")
    for names, option in ((targets, "--targets"), (backend_names, "--backends")):
        if len(set(names)) < len(names):
            raise BadInput(f"{option} names {', '.join(sorted({n for n in names if names.count(n) > 1}))} twice.")
    profiles = [load_target(name) for name in targets]  # an unknown target fails before the first build
    for name in backend_names:
        if name != AUTO:
            backends.get(name)  # an unknown backend is bad input naming the known ones
    names = [model.name for model in model_entries(models)] if models is not None else [DEFAULT_MODEL]
    entries = [MatrixEntry(model, profile.name, backend) for model in names for profile in profiles
               for backend in backend_names if backend == AUTO or backend in profile.backends]
    if not entries:
        raise BadInput(f"no target of {', '.join(targets)} is served by {', '.join(backend_names)}.")
    return entries


def column(entry: MatrixEntry, backend_names: list[str]) -> str:
    """The matrix column of an entry: its target, or 'target backend' when the matrix has several backends."""
    return entry.target if len(backend_names) == 1 else f"{entry.target} {entry.backend}"


def entry_options(entry: MatrixEntry, models: Path | None, out_root: Path, samples: int) -> BuildOptions:
    """The build of an entry. The model path is absolute: a Dask worker reads it at the same path."""
    model = None if models is None else (Path(models) / entry.model).absolute()
    return BuildOptions(target=entry.target, model=model, backend=entry.backend,
                        out=out_root / entry.target / entry.model / entry.backend, samples=samples)


def resources_for(target: Target) -> dict[str, int]:
    """The Dask worker resources a build for `target` needs: those of the runners that validate it (qemu, cuda)."""
    needs = (runners.get(name).caps.resource for name in target.runners)
    return {name: 1 for name in needs if name}


def run_coverage(models: Path, targets: list[str], backend: str = AUTO, out: Path | None = None,
                 samples: int = DEFAULT_SAMPLES, progress: Progress = quiet, scheduler: str | None = None,
                 workers: int | None = None) -> dict:
    """Build every model of `models` for every target; write coverage.json and coverage.md; return the matrix."""
    entries = plan(models, targets, [backend])
    out_root = Path(out) if out else DEFAULT_OUT
    started = time.monotonic()
    options = [entry_options(entry, models, out_root, samples) for entry in entries]
    cells = run_cells(options, scheduler, workers, progress)
    coverage = coverage_table(str(models), [backend], out_root, samples, time.monotonic() - started,
                              [(entry, opts.model, cell) for entry, opts, cell in zip(entries, options, cells)])
    out_root.mkdir(parents=True, exist_ok=True)
    report.write_coverage(out_root, coverage)
    return coverage


def coverage_table(models: str, backend_names: list[str], out_root: Path, samples: int, wall_seconds: float,
                   built: list[tuple[MatrixEntry, Path | None, dict]]) -> dict:
    """coverage.json's matrix from built entries (entry, model path, cell), rows and columns in the entries' order."""
    columns, rows = [], {}
    for entry, model_path, cell in built:
        name = column(entry, backend_names)
        if name not in columns:
            columns.append(name)
        row = rows.setdefault(entry.model, {"model": entry.model, "path": str(model_path or DEFAULT_MODEL),
                                            "cells": {}})
        row["cells"][name] = cell
    cells = [cell for _, _, cell in built]
    return {
        "models": models,
        "targets": columns,
        "backend": ",".join(backend_names),
        "out_dir": str(out_root),
        "samples": samples,
        "wall_seconds": round(wall_seconds, 1),
        "builds": len(cells),
        "validated": sum(cell["status"] == "validated" for cell in cells),
        "failed": sum(cell["status"] == "failed" for cell in cells),
        "rows": list(rows.values()),
    }


def run_cells(options: list[BuildOptions], scheduler: str | None = None, workers: int | None = None,
              progress: Progress = quiet) -> list[dict]:
    """The cell of each build, in order, each saying which worker built it. Without a scheduler a local pool
    builds straight into the build folders; on a Dask cluster the cache is checked here first, the rest are
    built in each worker's scratch folder and come back packed, to be put in place atomically."""
    if scheduler is None:
        jobs = [Job(_job_name(opts), build_cell, (opts,)) for opts in options]
        return [{**done.value, "worker": done.worker} for done in run_jobs(jobs, None, workers, progress=progress)]
    cells = [_cached_cell(opts) for opts in options]
    todo = [index for index, cell in enumerate(cells) if cell is None]
    jobs = [Job(_job_name(options[index]), shipped_cell, (options[index],), resources_for(target_of(options[index])))
            for index in todo]
    for index, done in zip(todo, run_jobs(jobs, scheduler, progress=progress)):
        cell, packed = done.value
        if packed is not None:
            _unpack(packed, options[index].out)
            cell = {**cell, "out_dir": str(options[index].out)}
        cells[index] = {**cell, "worker": done.worker}
    return cells


def _job_name(opts: BuildOptions) -> str:
    return f"{Path(opts.out).parent.name} for {opts.target} ({opts.backend})"


def _cached_cell(opts: BuildOptions) -> dict | None:
    """The cell of a build already in its folder, or None (also when planning it fails: the worker says why)."""
    try:
        hit = cached_build(opts)
    except EdgeyardError:
        return None
    return None if hit is None else {**_built_cell(opts, hit), "worker": LOCAL}


def shipped_cell(opts: BuildOptions) -> tuple[dict, bytes | None]:
    """On a Dask worker: the cell, built in a scratch folder, and that build folder packed (None when it failed)."""
    with tempfile.TemporaryDirectory(prefix="edgeyard-cell-") as scratch:
        cell = build_cell(replace(opts, out=Path(scratch) / "build"))
        return cell, None if cell["out_dir"] is None else _pack(Path(cell["out_dir"]))


def _pack(folder: Path) -> bytes:
    """A build folder as a gzipped tar (modes kept: bundles hold executables)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for item in sorted(folder.iterdir()):
            archive.add(item, arcname=item.name)
    return buffer.getvalue()


def _unpack(packed: bytes, out_dir: Path) -> None:
    """A packed build folder in place of out_dir, all or nothing; its report names out_dir as its folder."""
    with staged_dir(out_dir) as stage, tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as archive:
        archive.extractall(stage, filter="data")
        report.write(stage, {**report.read(stage), "out_dir": str(out_dir)})


def build_cell(opts: BuildOptions) -> dict:
    """One build as a matrix cell: status, the backend used, every backend tried with what stopped it."""
    try:
        built = build(opts)
    except AllBackendsFailed as err:
        return failed_cell(opts, str(err), [{"backend": a["backend"], "error": a["error"]} for a in err.attempts])
    except EdgeyardError as err:
        return failed_cell(opts, str(err), [] if opts.backend == AUTO else [{"backend": opts.backend, "error": str(err)}])
    except Exception as err:  # an edgeyard bug in one build must not lose the rest of the matrix
        message = f"internal error: {type(err).__name__}: {err}"
        return failed_cell(opts, message, [] if opts.backend == AUTO else [{"backend": opts.backend, "error": message}])
    return _built_cell(opts, built)


def _built_cell(opts: BuildOptions, built: BuildResult) -> dict:
    result = built.report
    validation = result["validation"]
    candidates = (result.get("selection") or {}).get("candidates") or [{"backend": result["backend"], "error": None}]
    attempts = [{"backend": c["backend"], "error": c["error"]} for c in candidates]
    memory = result.get("memory") or {}
    cell = {"status": "validated" if validation["passed"] else NOT_RUN, "backend": result["backend"],
            "error": None, "attempts": attempts, "out_dir": str(built.out_dir), "cached": built.cached,
            "max_abs_error": validation["max_abs_error"], "top1_agreement": validation["top1_agreement"],
            "flash_bytes": memory.get("flash_bytes"), "ram_bytes": memory.get("ram_bytes")}
    return {**cell, "text": _cell_text(cell, opts)}


def failed_cell(opts: BuildOptions, error: str, attempts: list[dict]) -> dict:
    """A cell whose build failed with `error` after `attempts` ([{backend, error}])."""
    cell = {"status": "failed", "backend": None, "error": error, "attempts": attempts, "out_dir": None,
            "cached": False, "max_abs_error": None, "top1_agreement": None, "flash_bytes": None, "ram_bytes": None}
    return {**cell, "text": _cell_text(cell, opts)}


def _cell_text(cell: dict, opts: BuildOptions) -> str:
    """'validated: litert (tvm: cannot import op CONV_2D (dynamic-range quantized))', 'failed (tvm: ...; ...)'."""
    stopped = [f"{a['backend']}: {_shortened(a['error'], a['backend'], opts)}" for a in cell["attempts"] if a["error"]]
    if cell["status"] == "failed" and not stopped:  # failed before any backend was tried (e.g. an unreadable option)
        stopped = [_shortened(cell["error"], "", opts)]
    why = f" ({'; '.join(stopped)})" if stopped else ""
    if cell["status"] == "failed":
        return f"failed{why}"
    return f"{cell['status']}: {cell['backend']}{why}"


def _shortened(message: str, backend: str, opts: BuildOptions) -> str:
    """A backend's error as a short clause: no model path, no backend and target the cell already names."""
    clause = short_reason(message, opts.model)
    for said in (f"backend '{backend}' ", f" for {backend} on {opts.target}"):
        clause = clause.replace(said, "")
    return clause if len(clause) <= REASON_CHARS else clause[: REASON_CHARS - 1].rstrip() + "…"


def matrix_text(coverage: dict) -> str:
    """The matrix for a terminal: rows models, columns targets."""
    from ..console import table

    rows = [[row["model"], *(row["cells"][t]["text"] for t in coverage["targets"])] for row in coverage["rows"]]
    head = (f"{coverage['validated']} of {coverage['builds']} builds validated, {coverage['failed']} failed "
            f"(--backend {coverage['backend']}, {coverage['wall_seconds']:.0f} s) -> {coverage['out_dir']}/coverage.md")
    return table(["model", *coverage["targets"]], rows) + "\n" + head
