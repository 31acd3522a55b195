"""invoke coverage: every model in a folder built for every target, as a matrix of what validated with which backend.

Each (model, target) cell is one build() (--backend auto by default, so a cell says which backend
won and what stopped the ones before it). A failing model is a failed cell, never the end of the
run. Builds go to <out>/<target>/<model file name>/<backend>/ (the whole file name: kws.tflite and
the SavedModel folder kws must not share a folder), so a second run is a cache hit per cell; the
matrix goes to <out>/coverage.json and coverage.md.
"""

import time
from pathlib import Path

from ..console import Progress, quiet
from ..errors import BadInput, EdgeyardError, short_reason
from ..model import SUFFIX_FORMATS
from ..options import DEFAULT_SAMPLES
from ..target.profile import load_target
from . import report
from .build import AUTO, AllBackendsFailed, BuildOptions, build
from .validate import NOT_RUN

DEFAULT_OUT = Path("build") / "coverage"
REASON_CHARS = 90  # a matrix cell shortens each backend's reason to this; coverage.json keeps the whole message


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


def run_coverage(models: Path, targets: list[str], backend: str = AUTO, out: Path | None = None,
                 samples: int = DEFAULT_SAMPLES, progress: Progress = quiet) -> dict:
    """Build every model of `models` for every target; write coverage.json and coverage.md; return the matrix."""
    entries = model_entries(models)
    if not targets:
        raise BadInput("--targets names no target; give e.g. --targets host,rpi4.")
    for name in targets:
        load_target(name)  # an unknown target fails before the first build, not in every row
    out_root = Path(out) if out else DEFAULT_OUT
    started = time.monotonic()
    rows = []
    for number, model in enumerate(entries, 1):
        cells = {}
        for target in targets:
            progress(f"model {number}/{len(entries)}: {model.name} for {target}")
            options = BuildOptions(target=target, model=model, backend=backend,
                                   out=out_root / target / model.name / backend, samples=samples)
            cells[target] = _cell(options, lambda message: progress(f"  {message}"))
        rows.append({"model": model.name, "path": str(model), "cells": cells})
    built = [cell for row in rows for cell in row["cells"].values()]
    coverage = {
        "models": str(models),
        "targets": list(targets),
        "backend": backend,
        "out_dir": str(out_root),
        "samples": samples,
        "wall_seconds": round(time.monotonic() - started, 1),
        "builds": len(built),
        "validated": sum(cell["status"] == "validated" for cell in built),
        "failed": sum(cell["status"] == "failed" for cell in built),
        "rows": rows,
    }
    out_root.mkdir(parents=True, exist_ok=True)
    report.write_coverage(out_root, coverage)
    return coverage


def _cell(opts: BuildOptions, progress: Progress) -> dict:
    """One build as a matrix cell: status, the backend used, every backend tried with what stopped it."""
    try:
        built = build(opts, progress)
    except AllBackendsFailed as err:
        return _failed(opts, str(err), err.attempts)
    except EdgeyardError as err:
        return _failed(opts, str(err), [] if opts.backend == AUTO else [{"backend": opts.backend, "error": str(err)}])
    except Exception as err:  # an edgeyard bug in one build must not lose the rest of the matrix
        message = f"internal error: {type(err).__name__}: {err}"
        return _failed(opts, message, [] if opts.backend == AUTO else [{"backend": opts.backend, "error": message}])
    result = built.report
    validation = result["validation"]
    attempts = result.get("attempts") or [{"backend": result["backend"], "error": None}]
    cell = {"status": "validated" if validation["passed"] else NOT_RUN, "backend": result["backend"],
            "error": None, "attempts": attempts, "out_dir": str(built.out_dir), "cached": built.cached,
            "max_abs_error": validation["max_abs_error"], "top1_agreement": validation["top1_agreement"]}
    return {**cell, "text": _cell_text(cell, opts)}


def _failed(opts: BuildOptions, error: str, attempts: list[dict]) -> dict:
    cell = {"status": "failed", "backend": None, "error": error, "attempts": attempts, "out_dir": None,
            "cached": False, "max_abs_error": None, "top1_agreement": None}
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
