"""Vendor synthesis of an FPGA build (`invoke fpga-synth`): AMD Vitis HLS on the build's hls4ml project.

Synthesis is the only source of resource use (LUT, FF, DSP, BRAM) and latency for an HLS design;
the build itself runs the C simulation only. This builds if needed, copies the bundle's project to
<build folder>/synthesis/ (the bundle stays as its manifest lists it), runs the vendor's tool there
and records its report in report.json under "synthesis".
"""

import contextlib
import io
import shutil
from dataclasses import replace
from pathlib import Path

from .. import proc
from ..backends.hls4ml import PROJECT, SYNTHESIS_HINT, SYNTHESIS_TOOL
from ..bundle import BUNDLE
from ..codegen import render
from ..console import Progress, quiet
from ..errors import BadInput, BuildError
from . import report
from .build import BuildOptions, BuildResult, build, target_of

SYNTHESIS_DIR = "synthesis"
LOG = "synthesis.log"
LABEL = "Vitis HLS synthesis estimate"


def synthesize(opts: BuildOptions, logic_synthesis: bool = False, progress: Progress = quiet) -> BuildResult:
    """Build with hls4ml if needed, then synthesize (C synthesis; with `logic_synthesis`, Vivado's too)."""
    target = target_of(opts)  # with the build's --set and --precision
    if target.fpga is None:
        raise BadInput(f"target {target.name} has no [fpga] table, so there is nothing to synthesize.")
    tool = proc.require(SYNTHESIS_TOOL, SYNTHESIS_HINT)
    built = build(replace(opts, backend="hls4ml"), progress)
    work = built.out_dir / SYNTHESIS_DIR
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(built.out_dir / BUNDLE / PROJECT, work)
    render("hls4ml_build_opt.tcl.j2", work / "build_opt.tcl", logic_synthesis=logic_synthesis)
    progress(f"synthesizing for {target.fpga['part']} with {SYNTHESIS_TOOL} (minutes to hours); log in {work / LOG}")
    proc.run([tool, "--tcl", "build_prj.tcl", "--mode", "hls"], cwd=work, what=SYNTHESIS_TOOL, log=work / LOG)
    section = {"label": LABEL, "tool": SYNTHESIS_TOOL, "folder": str(work), **_synthesis_report(work)}
    summary = {"key": "synthesis", "summary": f"{LABEL}: {section['c_synthesis']}"}
    sections = [s for s in built.report.get("sections", []) if s["key"] != "synthesis"]
    updated = {**built.report, "synthesis": section, "sections": [*sections, summary]}
    report.write(built.out_dir, updated)
    return BuildResult(built.out_dir, updated, built.cached)


def _synthesis_report(work: Path) -> dict:
    """Latency and resources from the synthesis reports, as hls4ml reads them."""
    from hls4ml.report import parse_vivado_report

    with contextlib.redirect_stdout(io.StringIO()):  # it prints what it cannot find
        parsed = parse_vivado_report(str(work)) or {}
    if "CSynthesisReport" not in parsed:
        raise BuildError(f"{SYNTHESIS_TOOL} finished but wrote no C synthesis report in {work}; see {work / LOG}.")
    return {"c_synthesis": parsed["CSynthesisReport"], "logic_synthesis": parsed.get("VivadoSynthReport")}
