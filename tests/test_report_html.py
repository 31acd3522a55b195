"""report.html / comparison.html / coverage.html, the quiet console and the progress output.

The fast tests render the HTML from report dictionaries (matplotlib and graphviz dot are real) and check
the progress printer and the redirection of the libraries' output; the default-tier test runs the
default `invoke build --target rpi4` in a pseudo-terminal; the slow test opens the reports in headless
Chromium (test_report_browser.py)."""

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from toolchain import console
from toolchain.pipeline import html_report

HOSTILE = 'conv<script>alert(1)</script>"\x1b[31m'
THIRD_PARTY = ("XNNPACK", "oneDNN", "NodeDef", "[E:onnxruntime", "absl::", "TF_CPP", "tensorflow/core")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class _Page(HTMLParser):
    """The section ids, the tags and every URL-bearing attribute of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.tags, self.urls = [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "section":
            self.sections.append(values.get("id"))
        self.urls += [v for k, v in attrs if k in ("src", "href", "xlink:href", "action") and v and v[0] != "#"]


def _report(**changes) -> dict:
    """A microcontroller build's report.json as the kernels backend writes it, names hostile."""
    report = {
        "target": "nucleo-l4r5zi", "backend": "kernels", "out_dir": "x",
        "model": {"path": f"models/{HOSTILE}.tflite", "format": "tflite", "compiled_format": "tflite", "sha256": "ab" * 32,
                  "params": 1000, "macs": 52000, "repairs": []},
        "validation": {"ran": True, "passed": True, "status": "passed", "samples": 4, "reference": "tflite-micro",
                       "max_abs_error": 0.0, "top1_agreement": 1.0},
        "bench": {"runner": "qemu-system", "emulated": True, "latency_ms": {"median": 1.0, "p90": 1.2},
                  "timings_ms": [1.0, 1.0, 1.1, 1.2], "instructions_per_inference": 80000, "runs": 4, "warmup": 1,
                  "threads": 1, "note": "estimate: instructions at the board's clock"},
        "profile": [{"layer": 0, "op": "CONV_2D", "name": HOSTILE, "macs": 50000, "instructions": 60000},
                    {"layer": 1, "op": "FULLY_CONNECTED", "name": "fc", "macs": 2000, "instructions": 20000}],
        "graph": [{"op": "CONV_2D", "inputs": ["in"], "outputs": [HOSTILE], "shape": [1, 4, 4, 2], "macs": 50000},
                  {"op": "FULLY_CONNECTED", "inputs": [HOSTILE], "outputs": ["out"], "shape": [1, 3], "macs": 2000}],
        "memory": {"flash_bytes": 5000, "ram_bytes": 3000, "flash_capacity_bytes": 8000, "ram_capacity_bytes": 4000,
                   "arena_bytes": 512, "sections": {".text": 4000, ".rodata": 1000, ".bss": 3000},
                   "flash_sections": {".text": 4000, ".rodata": 1000}, "ram_sections": {".bss": 3000},
                   "largest_flash": [{"symbol": HOSTILE, "bytes": 900, "section": ".text"}],
                   "largest_ram": [{"symbol": "arena", "bytes": 512, "section": ".bss"}]},
        "quantization": None, "sections": [], "artifacts": [{"path": "bundle/x.elf", "bytes": 10, "sha256": "cd" * 32}],
        "toolchain": {"edgeyard": "0.1.0"},
    }
    return {**report, **changes}


def _bundle_with_arena(folder: Path) -> Path:
    (folder / "bundle").mkdir(parents=True)
    arena = [{"tensor": HOSTILE, "offset": 0, "bytes": 256, "first_layer": 0, "last_layer": 1},
             {"tensor": "scratch of layer 0 (CONV_2D)", "offset": 256, "bytes": 256, "first_layer": 0, "last_layer": 0}]
    (folder / "bundle" / "manifest.json").write_text(
        json.dumps({"backend": "kernels", "files": [], "entry": {}, "firmware": {"arena": arena}}))
    return folder


@pytest.mark.fast
def test_microcontroller_report_has_every_section_and_escapes_names(tmp_path):
    page = html_report.write_report(_bundle_with_arena(tmp_path), _report()).read_text()
    parsed = _Page(page)
    assert parsed.sections == ["summary", "latency", "layers", "memory", "graph", "artifacts"]
    assert "<script" not in parsed.tags and "script" not in parsed.tags  # the hostile name stayed text
    assert "&lt;script&gt;" in page and "\x1b" not in page
    assert parsed.urls == []  # nothing to fetch: inline SVG and CSS only
    assert page.count("<svg") >= 5  # latency, layers, memory, arena, graph
    assert 'id="arena"' in page and "kernel library" in page and "estimate: instructions" in page


@pytest.mark.fast
def test_sections_appear_only_with_their_data(tmp_path):
    report = _report(profile=None, graph=None, memory=None, backend="litert",
                     bench={**_report()["bench"], "latency_ms": None, "timings_ms": [], "runs": 0, "note": None},
                     attempts=[{"backend": "tvm", "error": "cannot import op <PAD>"}, {"backend": "litert", "error": None}])
    parsed = _Page(html_report.write_report(tmp_path, report).read_text())
    assert parsed.sections == ["summary", "backend-choice", "artifacts"]


@pytest.mark.fast
def test_selection_and_quantization_are_drawn(tmp_path):
    selection = {"by": "instructions", "candidates": [
        {"backend": "kernels", "validated": True, "error": None, "instructions_per_inference": 80000, "latency_ms": None},
        {"backend": "tvm", "validated": False, "error": "validation failed", "instructions_per_inference": None,
         "latency_ms": None}]}
    quantization = {"method": "post-training", "io": "int8", "mode": "int8", "calibration": None,
                    "bytes": {"float": 4000, "quantized": 1200}, "weight_bytes": {"float": 3000, "quantized": 800},
                    "accuracy": {"float": 0.9, "quantized": 0.88, "change_points": -2.0, "samples": 100,
                                 "data": "digits"}}
    page = html_report.write_report(tmp_path, _report(selection=selection, quantization=quantization)).read_text()
    assert {"backend-choice", "quantization"} <= set(_Page(page).sections)
    assert "kernels (chosen)" in page and "-2.00 points" in page


@pytest.mark.fast
def test_coverage_grid_names_the_reason_in_failed_cells(tmp_path):
    failed = {"status": "failed", "backend": None, "error": "x", "text": "failed",
              "attempts": [{"backend": "tvm", "error": f"cannot import op {HOSTILE}"}]}
    good = {"status": "validated", "backend": "litert", "error": None, "text": "validated", "attempts": []}
    coverage = {"models": "models", "targets": ["host", "rpi4"], "validated": 1, "builds": 2, "failed": 1,
                "backend": "auto", "samples": 4, "rows": [{"model": "m.tflite", "cells": {"host": good, "rpi4": failed}}]}
    page = html_report.write_coverage(tmp_path, coverage).read_text()
    assert '<td class="failed">' in page and '<td class="validated">' in page
    assert "tvm: cannot import op conv&lt;script&gt;" in page and _Page(page).urls == []


@pytest.mark.fast
def test_progress_off_a_terminal_is_plain_lines():
    out = StringIO()
    printer = console.ProgressPrinter(out)
    printer(f"compiling {HOSTILE}")
    for done in (1, 2):
        printer(console.Count(f"[{done}/2] build done", done, 2))
    printer.close()
    text = out.getvalue()
    assert not CONTROL.search(text.replace("\n", "")), repr(text)
    assert len(text.splitlines()) == 3 and "2/2" in text and "elapsed" in text


@pytest.mark.fast
def test_progress_on_a_terminal_is_a_bar():
    out = StringIO()
    printer = console.ProgressPrinter(out, terminal=True)
    printer(console.Count("[1/4] build done", 1, 4))
    printer(console.Count("[2/4] build done", 2, 4))
    printer.close()
    assert "\r" in out.getvalue() and "2/4" in out.getvalue() and "\x1b[31m" not in out.getvalue()


@pytest.mark.fast
def test_library_output_goes_to_the_log_not_the_terminal(tmp_path, capfd):
    with console.framework_output(verbose=False) as log:
        os.write(2, b"I tensorflow/core: oneDNN custom operations are on\n")
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('[E:onnxruntime:x] child\\n')"], check=True)
        kept = log.keep(tmp_path)
    _, err = capfd.readouterr()
    assert "oneDNN" not in err and "onnxruntime" not in err
    assert kept == tmp_path / console.THIRD_PARTY_LOG and "oneDNN" in kept.read_text() and "child" in kept.read_text()
    os.write(2, b"after\n")
    assert "after" in capfd.readouterr().err  # the terminal is back


@pytest.mark.fast
def test_a_log_not_kept_and_the_logs_of_killed_processes_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed = tmp_path / "edgeyard-third-party-999999999.log"  # above Linux's highest pid: no such process
    running = tmp_path / f"edgeyard-third-party-{os.getppid()}.log"
    killed.write_text("left by a SIGKILL"), running.write_text("another build's, still running")
    with console.framework_output(verbose=False) as log:
        os.write(2, b"a failed build's library output\n")
        assert log.path.is_file() and not killed.exists()
    assert not log.path.exists() and running.read_text() == "another build's, still running"


@pytest.mark.fast
def test_verbose_leaves_library_output_on_the_terminal(capfd):
    with console.framework_output(verbose=True) as log:
        os.write(2, b"XNNPACK delegate\n")
    assert "XNNPACK" in capfd.readouterr().err and log.path is None


def _in_a_terminal(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as its stdin, stdout and stderr: what a user sees."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.chdir(cwd)
        os.execv(argv[0], argv)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def test_default_build_prints_only_edgeyard_lines_on_a_terminal(tmp_path):
    invoke = shutil.which("invoke", path=str(Path(sys.executable).parent))
    code, seen = _in_a_terminal([invoke, "build", "--target", "rpi4", "--out", str(tmp_path / "out")], PROJECT_ROOT)
    assert code == 0, seen
    assert not [p for p in THIRD_PARTY if p in seen], seen
    assert "validation: passed" in seen
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / console.THIRD_PARTY_LOG).is_file()
