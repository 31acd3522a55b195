"""--backend auto (every backend built and measured, the fastest shipped, failures recorded; its own cached folder)
and `invoke coverage` over a folder."""

import json
import shutil
from pathlib import Path

import pytest

from toolchain.pipeline import validate
from toolchain.pipeline.build import AllBackendsFailed, BuildOptions, build
from toolchain.errors import MissingTool

from conftest import cached_build_in_fresh_python, invoke

TVM_BLOCKED = "backend 'tvm' cannot import op FULLY_CONNECTED (dynamic-range quantized)"


def test_auto_records_why_the_others_stopped_and_ships_the_one_that_validated(tmp_path, hybrid_tflite, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default folder is relative: build/<target>/<stem>/auto/
    result = build(BuildOptions(target="host", model=hybrid_tflite, backend="auto", samples=4))
    assert result.out_dir == Path("build/host/hybrid_dense/auto")
    report = json.loads((result.out_dir / "report.json").read_text())
    selection = report["selection"]
    assert selection["by"] == "latency" and report["validation"]["passed"]
    candidates = {c["backend"]: c for c in selection["candidates"]}
    assert list(candidates) == ["tvm", "litert", "onnxruntime", "executorch"]
    assert not candidates["executorch"]["validated"] and "executorch" in candidates["executorch"]["error"]
    assert TVM_BLOCKED in candidates["tvm"]["error"] and not candidates["tvm"]["validated"]
    # tf2onnx's conversion of the dynamic-range quantized layer computes something else: ONNX Runtime's bundle
    # builds and runs, and fails validation.
    assert candidates["onnxruntime"]["error"].startswith("validation failed for onnxruntime on host: output")
    assert not candidates["onnxruntime"]["validated"] and candidates["onnxruntime"]["latency_ms"] is None
    assert report["backend"] == "litert" and candidates["litert"]["validated"] and candidates["litert"]["latency_ms"] > 0
    assert report["out_dir"] == str(result.out_dir)
    assert sorted(p.name for p in result.out_dir.iterdir() if p.name != "signature.json") == [
        "bundle", "provenance.json", "report.html", "report.json", "report.md"]
    # The candidates stay cached in their own folders: a later --backend litert build is free.
    assert (Path("build/host/hybrid_dense/litert/report.json")).is_file()
    markdown = (result.out_dir / "report.md").read_text()
    assert "## Backend choice (--backend auto)" in markdown and "| litert | yes | - |" in markdown
    assert "| **chosen** |" in markdown
    assert TVM_BLOCKED in markdown


def test_auto_cache_hit_is_instant_and_imports_no_heavy_library(tmp_path, hybrid_tflite):
    args = ["build", "--target", "host", "--backend", "auto", "--model", str(hybrid_tflite), "--out", str(tmp_path),
            "--samples", "4"]
    first = invoke(*args)
    assert first.returncode == 0, first.stderr
    chosen = json.loads((tmp_path / "report.json").read_text())["backend"]
    assert chosen == "litert" and "--backend auto chose litert by median latency" in first.stdout
    assert "no other candidate validated" in first.stdout
    assert "auto candidates stopped: tvm: backend 'tvm' cannot import op" in first.stdout
    assert "cached: nothing to do" in invoke(*args).stdout
    assert cached_build_in_fresh_python(hybrid_tflite, "auto", tmp_path, samples=4) == (True, chosen, [])


def test_auto_with_every_backend_failing_names_each_reason(tmp_path, hybrid_tflite, monkeypatch):
    monkeypatch.setitem(validate.FLOAT_TOLERANCE, "float32", -1.0)  # no result can be within this
    with pytest.raises(AllBackendsFailed) as failure:
        build(BuildOptions(target="host", model=hybrid_tflite, backend="auto", out=tmp_path / "out", samples=4))
    message = str(failure.value)
    assert message.startswith(f"no backend of host could build hybrid_dense.tflite: tvm: {TVM_BLOCKED}; "
                              "litert: validation failed for litert on host: output")
    assert "; onnxruntime: validation failed for onnxruntime on host: output" in message
    assert failure.value.exit_code == 1  # validation failures among them: a build failure, not bad input
    assert "; executorch: " in message and "cannot take a tflite model" in message
    assert [a["backend"] for a in failure.value.attempts] == ["tvm", "litert", "onnxruntime", "executorch"]
    assert list(tmp_path.iterdir()) == []


def test_coverage_matrix_over_a_folder_of_models(tmp_path, tiny_onnx, hybrid_tflite):
    models = tmp_path / "models"
    models.mkdir()
    for model in (tiny_onnx, hybrid_tflite):
        shutil.copy(model, models / model.name)
    (models / "broken.tflite").write_bytes(b"\x00not a flatbuffer" * 8)  # one failing model never stops the matrix
    (models / "notes.txt").write_text("not a model: skipped")
    out = tmp_path / "coverage"
    result = invoke("coverage", "--models", str(models), "--targets", "host", "--out", str(out), "--samples", "4")
    assert result.returncode == 1, result.stderr  # a failed cell fails the command, after the matrix is written
    assert "1 of 3 builds failed" in result.stderr

    coverage = json.loads((out / "coverage.json").read_text())
    assert coverage["targets"] == ["host"] and coverage["backend"] == "auto"
    assert (coverage["builds"], coverage["validated"], coverage["failed"]) == (3, 2, 1)
    cells = {row["model"]: row["cells"]["host"] for row in coverage["rows"]}
    assert list(cells) == ["broken.tflite", "hybrid_dense.tflite", "tiny_mlp.onnx"]
    # On the host auto ships the lower latency: which of two close backends that is, noise may decide.
    mlp = cells["tiny_mlp.onnx"]
    assert mlp["status"] == "validated" and mlp["backend"] in ("tvm", "onnxruntime")
    hybrid = cells["hybrid_dense.tflite"]
    assert hybrid["backend"] == "litert" and TVM_BLOCKED in hybrid["attempts"][0]["error"]
    assert hybrid["text"].startswith("validated: litert (tvm: cannot import op FULLY_CONNECTED (dynamic-range "
                                     "quantized); onnxruntime: validation failed")
    assert cells["broken.tflite"]["status"] == "failed" and cells["broken.tflite"]["text"].startswith("failed (tvm: ")
    assert (out / "host" / "hybrid_dense.tflite" / "auto" / "report.json").is_file()

    for line in ("hybrid_dense.tflite  validated: litert (tvm: cannot import op FULLY_CONNECTED",
                 f"tiny_mlp.onnx        {mlp['text']}", "2 of 3 builds validated, 1 failed"):
        assert line in result.stdout
    markdown = (out / "coverage.md").read_text()
    assert "| model | host |" in markdown and f"| `tiny_mlp.onnx` | {mlp['text']} |" in markdown
    assert "- `broken.tflite` on host:" in markdown


def test_auto_stops_at_a_missing_tool_instead_of_falling_back(tmp_path, tiny_tflite, monkeypatch):
    monkeypatch.setenv("EDGEYARD_CACHE", str(tmp_path / "empty-cache"))  # no aarch64 TVM runtime prepared there
    with pytest.raises(MissingTool, match=r"aarch64 TVM runtime .* run \./bootstrap\.sh\.$"):
        build(BuildOptions(target="rpi4", model=tiny_tflite, backend="auto", out=tmp_path / "out", samples=4))
    assert not (tmp_path / "out").exists()
