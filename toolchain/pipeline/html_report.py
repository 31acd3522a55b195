"""report.html, comparison.html and coverage.html: one self-contained file each (inline SVG and CSS, no
script, nothing fetched), rendered from templates/*.html.j2 with autoescaping. Each section is drawn only
where the data behind it exists; matplotlib is imported only here, when a file is written (never on a
cached build)."""

from pathlib import Path

from markupsafe import Markup

from ..bundle import BUNDLE, read_manifest
from ..codegen import render
from . import charts, model_graph


def _manifest(out_dir: Path) -> dict:
    """The bundle's manifest, or {} where the folder holds none (an API caller's report alone)."""
    return read_manifest(out_dir / BUNDLE) if (out_dir / BUNDLE / "manifest.json").is_file() else {}


def _latency_label(bench: dict) -> str:
    if bench["note"]:
        return bench["note"]
    return "emulated: wall time under an emulator" if bench["emulated"] else "measured"


def report_figures(out_dir: Path, report: dict) -> dict:
    """The report's drawings as inline SVG (Markup: matplotlib and dot escape the text they draw), each
    present only where the build has the data."""
    figures: dict = {}
    bench = report["bench"]
    if bench["latency_ms"] and bench.get("timings_ms"):
        figures["latency"] = charts.latency_histogram(bench["timings_ms"], bench["latency_ms"]["median"],
                                                      bench["latency_ms"]["p90"], _latency_label(bench))
    profile = report.get("profile")
    if profile:
        unit = "instructions" if "instructions" in profile[0] else "cycles"
        figures["profile"] = charts.layer_bars(profile, unit)
    memory = report.get("memory")
    if memory and "flash_sections" in memory:
        figures["memory"] = charts.memory_bars([
            ("flash", memory["flash_sections"], memory.get("flash_capacity_bytes")),
            ("RAM", memory["ram_sections"], memory.get("ram_capacity_bytes"))])
    arena = _manifest(out_dir).get("firmware", {}).get("arena")
    if arena and memory and memory.get("arena_bytes"):
        figures["arena"] = charts.arena_timeline(arena, memory["arena_bytes"])
    quantization = report.get("quantization")
    if quantization:
        figures["quantization_size"] = charts.paired_bars(
            "bytes", ["model", "weights"],
            [("float", [quantization["bytes"]["float"], quantization["weight_bytes"]["float"]]),
             (quantization["mode"], [quantization["bytes"]["quantized"], quantization["weight_bytes"]["quantized"]])],
            "bytes")
        if quantization["accuracy"]:
            accuracy = quantization["accuracy"]
            figures["quantization_accuracy"] = charts.paired_bars(
                "top-1 accuracy", ["float", quantization["mode"]],
                [("accuracy", [100 * accuracy["float"], 100 * accuracy["quantized"]])], "top-1 accuracy, %")
    candidates = (report.get("selection") or {}).get("candidates") or []
    measured = [c for c in candidates if c.get(_selection_unit(report)) is not None]
    if measured:
        unit = _selection_unit(report)
        values = [c[unit] for c in measured]
        figures["selection"] = charts.paired_bars("candidates", [c["backend"] for c in measured],
                                                  [(unit, values)], _UNIT_LABELS[unit])
    return {name: Markup(svg) for name, svg in figures.items()}


_UNIT_LABELS = {"instructions_per_inference": "instructions per inference", "latency_ms": "median latency, ms"}


def _selection_unit(report: dict) -> str:
    """The candidates' figure `selection.by` names: instructions or latency."""
    return "instructions_per_inference" if report["selection"]["by"] == "instructions" else "latency_ms"


def write_report(out_dir: Path, report: dict) -> Path:
    """report.html beside report.json."""
    figures = report_figures(out_dir, report)
    graph, graph_missing, places = None, None, None
    if report.get("graph"):
        places = model_graph.placement(report)
        svg, graph_missing = model_graph.graph_svg(report["graph"], places)
        graph = Markup(svg) if svg else None
    return render("report.html.j2", out_dir / "report.html", report=report, figures=figures, graph=graph,
                  graph_missing=graph_missing, placement=places, place_colours=model_graph.PLACES,
                  latency_label=_latency_label(report["bench"]))


def write_comparison(out_dir: Path, comparison: dict) -> Path:
    """comparison.html: every backend of one target side by side, with the latencies as bars."""
    timed = [row for row in comparison["rows"] if not row["error"] and row["bench"]["latency_ms"]]
    figure = Markup(charts.paired_bars(
        "latency per inference", [row["backend"] for row in timed],
        [("median", [row["bench"]["latency_ms"]["median"] for row in timed]),
         ("p90", [row["bench"]["latency_ms"]["p90"] for row in timed])], "ms")) if timed else None
    return render("comparison.html.j2", out_dir / "comparison.html", comparison=comparison, figure=figure)


def write_coverage(out_dir: Path, coverage: dict) -> Path:
    """coverage.html: the matrix as a coloured grid, the reason in each failed cell."""
    return render("coverage.html.j2", out_dir / "coverage.html", coverage=coverage)
