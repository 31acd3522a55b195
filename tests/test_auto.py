"""--backend auto by measurement: every backend of the target built, validated and measured, the fastest shipped,
a failing candidate (internal errors included) recorded and skipped."""

import json

from toolchain.backends.tvm import TvmBackend
from toolchain.pipeline.build import BuildOptions, build

from conftest import invoke


def test_auto_ships_the_candidate_with_the_fewest_instructions(tmp_path, tiny_tflite, aarch64_runtime):
    # A model this small is mostly per-inference overhead, which the native TVM runner does not pay and the Python
    # runtimes (LiteRT, ONNX Runtime) do: on the emulated board tvm executes clearly fewer instructions.
    result = invoke("build", "--target", "rpi4", "--model", str(tiny_tflite), "--out", str(tmp_path), "--samples", "4")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    selection = report["selection"]
    assert selection["by"] == "instructions"
    candidates = {c["backend"]: c for c in selection["candidates"]}
    # executorch compiles torch.export programs: a .tflite is not for it, and its row says so
    assert "cannot take a tflite model" in candidates.pop("executorch")["error"]
    counts = {name: c["instructions_per_inference"] for name, c in candidates.items()}
    assert list(counts) == ["tvm", "litert", "onnxruntime"] and all(c["validated"] for c in candidates.values())
    assert all(c["error"] is None and c["latency_ms"] > 0 for c in candidates.values())
    runner_up = sorted(counts.values())[1]
    assert report["backend"] == "tvm" == min(counts, key=counts.get) and runner_up > 1.3 * counts["tvm"]
    assert report["bench"]["instructions_per_inference"] == counts["tvm"]
    assert f"--backend auto chose tvm by instructions per inference ({counts['tvm']:,}); runner-up " in result.stdout
    assert f"at {runner_up / counts['tvm']:.2f}x" in result.stdout
    markdown = (tmp_path / "report.md").read_text()
    assert f"| tvm | yes | {counts['tvm']:,} |" in markdown and "| **chosen** |" in markdown
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "signature.json") == [
        "bundle", "provenance.json", "report.html", "report.json", "report.md",
        "third-party.log"]  # the losing candidates' folders are gone


def test_a_failing_candidate_is_recorded_and_skipped(tmp_path, tiny_tflite, monkeypatch):
    def broken(self, request):
        raise RuntimeError("a bug in the tvm backend")

    monkeypatch.setattr(TvmBackend, "compile", broken)  # an internal error, not one of edgeyard's own
    opts = BuildOptions(target="host", model=tiny_tflite, backend="auto", out=tmp_path / "out", samples=4,
                        settings={"backends": ["tvm", "litert"]})
    result = build(opts)
    assert result.report["backend"] == "litert" and result.report["validation"]["passed"]
    tvm, litert = result.report["selection"]["candidates"]
    assert tvm == {"backend": "tvm", "validated": False, "error": "internal error: RuntimeError: a bug in the tvm backend",
                   "instructions_per_inference": None, "latency_ms": None}
    assert litert["validated"] and litert["error"] is None and litert["latency_ms"] > 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["selection"] == result.report["selection"]
    assert "RuntimeError: a bug in the tvm backend" in (tmp_path / "out" / "report.md").read_text()
