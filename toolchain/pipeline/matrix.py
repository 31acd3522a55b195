"""invoke matrix: the coverage matrix split across CI jobs or machines and merged back (as Zephyr's twister does).

--plan      the matrix's entries (pipeline/coverage.py: model, target, backend) grouped in shards, as JSON
            for GitHub Actions' fromJSON: {"include": [{"shard": "1/N", "entries": [...]}, ...]}.
--shard i/N builds the i-th share (entries i-1, i-1+N, ...: shards differ by one entry at most) as
            coverage builds its cells, into OUT/<target>/<model>/<backend>/, and records the share
            in OUT/matrix-shard.json (failed builds leave no folder, so the record keeps them).
--merge     reads shard folders (records and each build's report.json) into one coverage.json and
            coverage.md: the table `invoke coverage` writes. With a baseline (an earlier merged
            coverage.json), a cell whose flash or RAM grew by more than max_growth is a regression.
"""

import json
import time
from pathlib import Path

from ..atomic import atomic_write
from ..bundle import file_problem
from ..console import Progress, quiet
from ..errors import BadInput
from ..options import DEFAULT_SAMPLES
from . import report
from .coverage import DEFAULT_MODEL, MatrixEntry, coverage_table, entry_options, failed_cell, plan, run_cells

SHARD_RECORD = "matrix-shard.json"
DEFAULT_OUT = Path("build") / "matrix"
SIZES = ("flash_bytes", "ram_bytes")


def shard_entries(entries: list[MatrixEntry], index: int, count: int) -> list[MatrixEntry]:
    """The index-th (from 1) of `count` shares of the entries."""
    return entries[index - 1::count]


def plan_json(entries: list[MatrixEntry], shards: int) -> dict:
    """The plan in shards for fromJSON (no more shards than entries: a shard job never builds nothing)."""
    if shards < 1:
        raise BadInput(f"--shards must be at least 1, not {shards}.")
    count = min(shards, len(entries))
    return {"include": [{"shard": f"{index}/{count}",
                         "entries": [entry.to_json() for entry in shard_entries(entries, index, count)]}
                        for index in range(1, count + 1)]}


def run_shard(models: Path | None, targets: list[str], backend_names: list[str], shard: tuple[int, int],
              out: Path | None = None, samples: int = DEFAULT_SAMPLES, scheduler: str | None = None,
              workers: int | None = None, progress: Progress = quiet) -> dict:
    """Build one shard of the plan; write OUT/matrix-shard.json and the shard's coverage.json/.md; return its table."""
    entries = plan(models, targets, backend_names)
    mine = shard_entries(entries, *shard)
    out_root = Path(out) if out else DEFAULT_OUT
    started = time.monotonic()
    options = [entry_options(entry, models, out_root, samples) for entry in mine]
    cells = run_cells(options, scheduler, workers, progress)
    record = {
        "shard": f"{shard[0]}/{shard[1]}",
        "models": str(models or DEFAULT_MODEL),
        "backends": backend_names,
        "samples": samples,
        "plan": [entry.to_json() for entry in entries],
        "wall_seconds": round(time.monotonic() - started, 1),
        "built": [{**entry.to_json(), "model_path": str(opts.model or DEFAULT_MODEL), "cell": cell}
                  for entry, opts, cell in zip(mine, options, cells)],
    }
    table = coverage_table(record["models"], backend_names, out_root, samples, record["wall_seconds"],
                           [(entry, opts.model, cell) for entry, opts, cell in zip(mine, options, cells)])
    out_root.mkdir(parents=True, exist_ok=True)
    atomic_write(out_root / SHARD_RECORD, json.dumps(record, indent=2) + "\n")
    report.write_coverage(out_root, table)  # the shard's own table, for a look at one CI job's artifact
    return table


def shard_folders(folders: list[Path]) -> list[Path]:
    """Each folder given to --merge: a shard folder, or a folder of them (downloaded CI artifacts)."""
    found = []
    for folder in map(Path, folders):
        if (folder / SHARD_RECORD).is_file():
            found.append(folder)
            continue
        inside = sorted(sub for sub in folder.iterdir() if (sub / SHARD_RECORD).is_file()) if folder.is_dir() else []
        if not inside:
            raise BadInput(f"{folder} holds no {SHARD_RECORD}, nor do its subfolders: not a matrix shard's folder.")
        found.extend(inside)
    return found


def merge(folders: list[Path], out: Path | None = None, baseline: Path | None = None,
          max_growth: float | None = None) -> dict:
    """One coverage table from shard folders, written to OUT/coverage.json and coverage.md; an entry of the
    plan that no shard built is a failed cell. With a baseline, `size_check` lists flash/RAM growth."""
    folders = shard_folders(folders)
    records = [_read_record(folder) for folder in folders]
    first = records[0]
    built: dict[MatrixEntry, tuple[str, dict]] = {}
    for folder, record in zip(folders, records):
        if record["plan"] != first["plan"] or record["samples"] != first["samples"]:
            raise BadInput(f"{folder}'s shard was planned with other models, targets, backends or samples "
                           f"than {folders[0]}'s.")
        for item in record["built"]:
            entry = MatrixEntry(item["model"], item["target"], item["backend"])
            if entry in built:
                raise BadInput(f"{folder} builds {entry.model} for {entry.target} ({entry.backend}) again: "
                               "give each shard's folder once.")
            built[entry] = (item["model_path"], _checked_cell(folder, entry, item["model_path"], item["cell"]))
    out_root = Path(out) if out else DEFAULT_OUT
    merged = sorted({record["shard"] for record in records})
    rows = []
    for entry in (MatrixEntry(**item) for item in first["plan"]):
        model_path, cell = built.get(entry) or (None, failed_cell(
            _options(entry, None), f"no shard folder holds this entry (shards merged: {', '.join(merged)})", []))
        rows.append((entry, model_path, cell))
    coverage = coverage_table(first["models"], first["backends"], out_root, first["samples"],
                              sum(record["wall_seconds"] for record in records), rows)
    coverage["shards"] = [f"{folder} ({record['shard']})" for folder, record in zip(folders, records)]
    if baseline is not None:
        coverage["size_check"] = size_check(coverage, baseline, 0.0 if max_growth is None else max_growth)
    out_root.mkdir(parents=True, exist_ok=True)
    report.write_coverage(out_root, coverage)
    return coverage


def _options(entry: MatrixEntry, model_path: str | None):
    """The entry's build options as far as a cell's text needs them (the model, to shorten messages)."""
    models = None if model_path in (None, DEFAULT_MODEL) else Path(model_path).parent
    return entry_options(entry, models, Path(), DEFAULT_SAMPLES)


RECORD_KEYS = {"shard", "models", "backends", "samples", "plan", "wall_seconds", "built"}


def _read_record(folder: Path) -> dict:
    path = folder / SHARD_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BadInput(f"{path} is not a matrix shard record ({type(err).__name__}: {err}).") from None
    if not isinstance(record, dict) or not RECORD_KEYS <= record.keys():
        raise BadInput(f"{path} is not a matrix shard record (it lacks {', '.join(sorted(RECORD_KEYS))}).")
    return record


def _checked_cell(folder: Path, entry: MatrixEntry, model_path: str, cell: dict) -> dict:
    """A shard's cell, with its sizes and folder taken from the build's report.json in `folder`; a build the
    record says exists but whose folder is missing or altered is a failed cell."""
    if cell["status"] == "failed":
        return cell
    build_dir = folder / entry.target / entry.model / entry.backend
    try:
        result = report.read(build_dir)
    except (OSError, ValueError):
        return failed_cell(_options(entry, model_path), f"{build_dir}/report.json is missing or unreadable",
                           cell["attempts"])
    damaged = [artifact["path"] for artifact in result.get("artifacts", []) if file_problem(build_dir, artifact)]
    if damaged:
        return failed_cell(_options(entry, model_path), f"{build_dir} is altered: {', '.join(damaged)}",
                           cell["attempts"])
    memory = result.get("memory") or {}
    return {**cell, "out_dir": str(build_dir), **{size: memory.get(size) for size in SIZES}}


def size_check(coverage: dict, baseline: Path, max_growth: float) -> dict:
    """Every cell's flash and RAM against the same cell of an earlier coverage.json; growth above max_growth
    is a regression. Cells or figures the baseline lacks are not compared."""
    try:
        before = json.loads(Path(baseline).read_text())
        old = {(row["model"], name): cell for row in before["rows"] for name, cell in row["cells"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise BadInput(f"{baseline} is not a coverage.json to compare sizes with ({type(err).__name__}).") from None
    compared = []
    for row in coverage["rows"]:
        for name, cell in row["cells"].items():
            was = old.get((row["model"], name), {})
            for size in SIZES:
                if cell.get(size) is None or not was.get(size):
                    continue
                growth = (cell[size] - was[size]) / was[size]
                compared.append({"model": row["model"], "target": name, "size": size, "before": was[size],
                                 "after": cell[size], "growth": round(growth, 4), "regressed": growth > max_growth})
    return {"baseline": str(baseline), "max_growth": max_growth, "compared": compared,
            "regressions": sum(item["regressed"] for item in compared)}


def size_check_text(check: dict) -> str:
    """The size comparison for a terminal: the regressions, or a line saying there are none."""
    from ..console import table

    rows = [[item["model"], item["target"], item["size"], str(item["before"]), str(item["after"]),
             f"{item['growth']:+.1%}"] for item in check["compared"] if item["regressed"]]
    head = (f"{check['regressions']} of {len(check['compared'])} flash/RAM figures grew by more than "
            f"{check['max_growth']:.1%} against {check['baseline']}")
    return head if not rows else head + "\n" + table(["model", "target", "size", "before", "after", "growth"], rows)
