"""report.json (its keys are pinned: docs/reports.md), report.md and report.html in the build folder, and the console
summaries."""

import json
from pathlib import Path

from ..atomic import atomic_write
from ..codegen import render
from ..console import table
from ..errors import short_reason
from . import html_report


def write(out_dir: Path, report: dict) -> None:
    """report.json, report.md and report.html."""
    _write_json_and_markdown(out_dir, "report", report)
    html_report.write_report(out_dir, report)


def write_comparison(out_dir: Path, comparison: dict) -> None:
    """comparison.json, comparison.md and comparison.html: every backend of one target side by side."""
    _write_json_and_markdown(out_dir, "comparison", comparison)
    html_report.write_comparison(out_dir, comparison)


def write_coverage(out_dir: Path, coverage: dict) -> None:
    """coverage.json, coverage.md and coverage.html: every model of a folder built for every target
    (toolchain.coverage)."""
    _write_json_and_markdown(out_dir, "coverage", coverage)
    html_report.write_coverage(out_dir, coverage)


def write_mcu_bench(out_dir: Path, bench: dict) -> None:
    """mcu_bench.json and mcu_bench.md: the MLPerf Tiny models on a microcontroller, every backend (bench-mcu)."""
    _write_json_and_markdown(out_dir, "mcu_bench", bench, headers=MCU_BENCH_HEADERS, rows=mcu_bench_rows(bench))


def _write_json_and_markdown(out_dir: Path, stem: str, data: dict, **context) -> None:
    """<stem>.json and <stem>.md (from templates/<stem>.md.j2); each replaces its old version atomically."""
    atomic_write(out_dir / f"{stem}.json", json.dumps(data, indent=2) + "\n")
    render(f"{stem}.md.j2", out_dir / f"{stem}.md", **{stem: data}, **context)


def read(out_dir: Path) -> dict:
    return json.loads((out_dir / "report.json").read_text())


def summary(report: dict) -> str:
    """A few lines for a human after `invoke build` or `invoke bench`."""
    v, b = report["validation"], report["bench"]
    lines = [f"{report['target']} / {report['backend']} / {Path(report['model']['path']).name} -> {report['out_dir']}"]
    if report.get("selection"):
        lines += selection_summary(report["selection"], report["backend"], report["model"]["path"])
    for line in report["model"].get("repairs", []):
        lines.append(f"repair: {line}")
    if v["ran"]:
        acc = f", accuracy {v['accuracy']:.1%} (reference {v['reference_accuracy']:.1%})" if "accuracy" in v else ""
        agree = f", top-1 agreement {v['top1_agreement']:.0%}" if v["top1_agreement"] is not None else ""
        lines.append(f"validation: {v['status']} on {v['samples']} samples, max abs error "
                     f"{v['max_abs_error']:.3g}{agree}{acc}")
    else:
        lines.append(f"validation: {v['status']}")
    if b["latency_ms"]:
        label = f" ({b['note']})" if b["note"] else ""
        lines.append(f"latency: median {b['latency_ms']['median']:.3f} ms, p90 {b['latency_ms']['p90']:.3f} ms "
                     f"over {b['runs']} runs on {b['runner']}{label}")
    size = sum(a["bytes"] for a in report["artifacts"])
    if b["instructions_per_inference"]:
        lines.append(f"instructions per inference: {b['instructions_per_inference']:,} (instructions, not cycles)")
    if b.get("estimated_cycles_per_inference"):
        lines.append(f"estimated cycles per inference: {b['estimated_cycles_per_inference']:,} (estimate from "
                     f"instruction classes and the {b['cycle_model']['core']}'s published timings)")
    if report.get("quantization"):
        lines.append(quantization_summary(report["quantization"]))
    lines += [section["summary"] for section in report.get("sections", []) if section["summary"]]
    lines.append(f"bundle: {len(report['artifacts'])} files, {size / 1e6:.2f} MB")
    return "\n".join(lines)


UNITS = {"instructions": "instructions per inference", "latency": "median latency"}


def selection_cost(candidate: dict, by: str) -> str:
    """A candidate's measured cost as text: '65,175' instructions or '0.312 ms'."""
    if by == "instructions":
        return f"{candidate['instructions_per_inference']:,}"
    return f"{candidate['latency_ms']:.4g} ms"


def runner_up_ratio(selection: dict, chosen: str) -> tuple[str, float] | None:
    """(runner-up backend, its cost over the chosen one's), or None with fewer than two measured candidates."""
    by = selection["by"]
    field = "instructions_per_inference" if by == "instructions" else "latency_ms"
    costs = {c["backend"]: c[field] for c in selection["candidates"] if c["validated"] and c[field]}
    others = sorted((cost, name) for name, cost in costs.items() if name != chosen)
    if chosen not in costs or not others:
        return None
    return others[0][1], others[0][0] / costs[chosen]


def selection_summary(selection: dict, chosen: str, model_path: str) -> list[str]:
    """--backend auto's lines: the winner by what, the runner-up's ratio, and what stopped the others."""
    by = selection["by"]
    if by is None:
        line = f"--backend auto chose {chosen}: no candidate could run here to be measured"
    else:
        winner = next(c for c in selection["candidates"] if c["backend"] == chosen)
        line = f"--backend auto chose {chosen} by {UNITS[by]} ({selection_cost(winner, by)})"
        runner_up = runner_up_ratio(selection, chosen)
        line += f"; runner-up {runner_up[0]} at {runner_up[1]:.2f}x" if runner_up else "; no other candidate validated"
    stopped = [f"{c['backend']}: {short_reason(c['error'], model_path)}" for c in selection["candidates"] if c["error"]]
    return [line] + ([f"auto candidates stopped: {'; '.join(stopped)}"] if stopped else [])


def quantization_summary(q: dict) -> str:
    """One line: mode, I/O, calibration, size before -> after, accuracy before -> after (or why there is none)."""
    calibration = f", calibrated on {q['calibration']['samples']} samples of {q['calibration']['source']}" \
        if q["calibration"] else ""
    size = (f"{q['bytes']['float']:,} -> {q['bytes']['quantized']:,} B "
            f"(weights {q['weight_bytes']['float']:,} -> {q['weight_bytes']['quantized']:,} B)")
    a = q["accuracy"]
    accuracy = (f"top-1 accuracy {a['float']:.1%} -> {a['quantized']:.1%} ({a['change_points']:+.1f} points) "
                f"on {a['samples']} samples of {a['data']}") if a else f"accuracy: {q['accuracy_unavailable']}"
    line = f"quantization: {q['mode']} ({q['io']} I/O){calibration}; {size}; {accuracy}"
    return line + (f"\n{mixed_summary(q['mixed'])}" if q.get("mixed") else "")


def mixed_summary(m: dict) -> str:
    """--quantize mixed in one line: the layers kept float, or that full int8 met the budget, with the measured drop."""
    int8, mixed = m["compared"]["int8"], m["compared"]["mixed"]
    on = f"on {m['eval']['samples']} samples of {m['eval']['data']}"
    if m["int8_within_budget"]:
        return (f"mixed: full int8 is within the budget: no layer kept float (measured drop {int8['drop_points']:.2f} "
                f"points {on}, budget {m['budget_points']}; {int8['changed_predictions']} top-1 predictions differ "
                "from the float model's)")
    return (f"mixed: {len(m['float_layers'])} layer{'s' * (len(m['float_layers']) > 1)} kept float "
            f"({', '.join(m['float_layers'])}): accuracy drop {mixed['drop_points']:.2f} points {on}, within the "
            f"budget of {m['budget_points']} (full int8: {int8['drop_points']:.2f} points)")


def comparison_summary(comparison: dict) -> str:
    rows = []
    for row in comparison["rows"]:
        if row["error"]:
            rows.append([row["backend"], f"could not build: {row['error']}", "-", "-", "-", "-"])
            continue
        v, b = row["validation"], row["bench"]
        latency = b["latency_ms"]
        rows.append([row["backend"], v["status"], f"{latency['median']:.3f}" if latency else "-",
                     f"{latency['p90']:.3f}" if latency else "-",
                     f"{b['instructions_per_inference']:,}" if b["instructions_per_inference"] else "-",
                     (b["runner"] or "-") + (" (emulated)" if b["emulated"] else "")])  # the note is in comparison.md
    head = f"{Path(comparison['model']).name} on {comparison['target']} -> {comparison['out_dir']}/comparison.md"
    return head + "\n" + table(["backend", "validation", "median ms", "p90 ms", "instructions", "runner"], rows)


def tune_summary(result) -> str:
    """`invoke tune`'s table: each tunable task, tuned before or its best cost now (tuning.TuneResult)."""
    unit = "instructions" if result.measured_by == "instructions" else "us"
    rows = []
    for task in result.tasks:
        best = task["best"]
        shown = "-" if best is None else f"{best:,.0f}" if unit == "instructions" else f"{best * 1e6:.1f}"
        state = ("refined now" if task["tuned_before"] else "tuned now") if best is not None else (
            "in the database already" if task["tuned_before"] else "not reached")
        rows.append([task["name"], state, shown])
    stopped = {"timeout": "; stopped by --timeout", "interrupted": "; interrupted"}.get(result.stopped, "")
    retimed = f"; {result.retimed} best records timed again first" if result.retimed else ""
    retimed += (f"; {result.borrowed} schedules of other tasks tried after the search, the best of "
                f"{result.improved_by_borrowing} tasks now one of them" if result.borrowed else "")
    head = (f"{result.tuned} of {len(result.tasks)} tunable tasks of {Path(result.model).name} tuned for "
            f"{result.target} in {result.database}: {result.trials} candidates measured in {result.seconds:.0f} s "
            f"by {result.measured_by}{retimed}{stopped}")
    return head + "\n" + table(["task", "state", f"best in the database ({unit})"], rows)


MCU_BENCH_HEADERS = ["model", "backend", "validated (max LSB)", "instructions (emulated)", "cycles (estimate)",
                     "working memory B", "TFLM arena B", "memory/TFLM", "flash B", "RAM B", "published best cycles",
                     "estimate/published"]


def mcu_bench_rows(bench: dict) -> list[list[str]]:
    """bench-mcu's table, one list of cells per (model, backend); the same cells in the console and mcu_bench.md."""
    def number(value) -> str:
        return f"{value:,}" if value is not None else "-"

    rows = []
    for row in bench["rows"]:
        published = f"{row['published_cycles'] / 1e6:.3g} M" if row["published_cycles"] else "-"
        if row["error"]:
            rows.append([row["model"], row["backend"], f"failed: {short_reason(row['error'], row['model'])}",
                         "-", "-", "-", number(row["tflm_arena_bytes"]), "-", "-", "-", published, "-"])
            continue
        validated = f"{'yes' if row['validated'] else 'NO'} ({row['max_abs_error']:.3g})"
        ratio = lambda value: f"{value:.2f}x" if value is not None else "-"  # noqa: E731
        rows.append([row["model"], row["backend"], validated, number(row["instructions_per_inference"]),
                     number(row["estimated_cycles_per_inference"]), number(row["working_memory_bytes"]),
                     number(row["tflm_arena_bytes"]), ratio(row["arena_ratio"]), number(row["flash_bytes"]),
                     number(row["ram_bytes"]), published, ratio(row["cycles_over_published"])])
    return rows


def mcu_bench_text(bench: dict) -> str:
    head = (f"MLPerf Tiny int8 on {bench['target']} -> {bench['out_dir']}/mcu_bench.md "
            f"(instructions: counted by the emulator; cycles: an estimate from instruction classes)")
    return head + "\n" + table(MCU_BENCH_HEADERS, mcu_bench_rows(bench))
