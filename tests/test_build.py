"""End to end: model file -> bundle -> run -> validate -> report, for each backend, plus the error paths."""

import json
from pathlib import Path

import pytest

from toolchain.pipeline import validate
from toolchain.pipeline.bench import compare_backends, run_bench
from toolchain.pipeline.build import BuildOptions, build
from toolchain.errors import BadInput, BuildError

from conftest import EM_AARCH64, cached_build_in_fresh_python, elf_machine, invoke

PINNED_KEYS = {"target", "model", "backend", "artifacts", "validation", "bench", "memory", "toolchain"}


def _build(tmp_path, target, model, backend, **kw):
    return build(BuildOptions(target=target, model=model, backend=backend, out=tmp_path / "out", **kw))


def _check_report(out: Path, target: str, backend: str) -> dict:
    report = json.loads((out / "report.json").read_text())
    assert PINNED_KEYS <= set(report)
    assert report["target"] == target and report["backend"] == backend
    assert {"path", "sha256"} <= set(report["model"])
    assert {"passed", "max_abs_error", "top1_agreement", "samples"} <= set(report["validation"])
    assert {"runner", "emulated", "latency_ms", "instructions_per_inference", "runs"} <= set(report["bench"])
    for artifact in report["artifacts"]:
        assert (out / artifact["path"]).stat().st_size == artifact["bytes"]
    assert (out / "report.md").read_text().startswith("# edgeyard build report")
    return report


@pytest.mark.parametrize("backend,fixture", [("litert", "tiny_tflite"), ("onnxruntime", "tiny_onnx"),
                                             ("tvm", "tiny_tflite"), ("tvm", "tiny_onnx"),
                                             ("onnxruntime", "tiny_keras")])
def test_host_build_validates(tmp_path, request, backend, fixture):
    result = _build(tmp_path, "host", request.getfixturevalue(fixture), backend)
    report = _check_report(result.out_dir, "host", backend)
    v = report["validation"]
    assert v["passed"] is True and v["ran"] and v["samples"] == validate.DEFAULT_SAMPLES
    assert v["top1_agreement"] == 1.0
    assert report["bench"]["runner"] == "host" and report["bench"]["emulated"] is False
    assert report["bench"]["latency_ms"]["median"] > 0
    assert not list(tmp_path.glob(".out.partial-*"))


def test_second_build_is_cached(tmp_path, tiny_tflite):
    first = _build(tmp_path, "host", tiny_tflite, "litert")
    second = _build(tmp_path, "host", tiny_tflite, "litert")
    assert second.cached and not first.cached  # nothing rebuilt: cached is set only on a key match
    assert second.report == first.report
    # A changed option is a different key; a damaged artifact is not reused.
    assert not _build(tmp_path, "host", tiny_tflite, "litert", samples=8).cached
    runner = next(iter((tmp_path / "out" / "bundle").glob("run_*.py")))
    runner.write_text(runner.read_text() + "\n# edited\n")
    assert not _build(tmp_path, "host", tiny_tflite, "litert", samples=8).cached


def test_cached_build_imports_no_heavy_library(tmp_path, tiny_tflite):
    args = ["build", "--target", "host", "--backend", "litert", "--model", str(tiny_tflite), "--out", str(tmp_path)]
    assert invoke(*args).returncode == 0
    assert "cached: nothing to do" in invoke(*args).stdout
    assert cached_build_in_fresh_python(tiny_tflite, "litert", tmp_path) == (True, "litert", [])


@pytest.mark.slow  # also in test_linux_boards (validated under emulation) and test_tvm_backend (ELF machines)
def test_rpi4_tvm_runs_under_qemu(tmp_path, tiny_tflite):
    result = _build(tmp_path, "rpi4", tiny_tflite, "tvm")
    report = _check_report(result.out_dir, "rpi4", "tvm")
    assert report["validation"]["passed"] is True
    assert report["bench"]["runner"] == "qemu-user" and report["bench"]["emulated"] is True
    for binary in ("runner", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so"):
        assert elf_machine(result.out_dir / "bundle" / binary) == EM_AARCH64, binary


def test_bench_updates_report(tmp_path, tiny_onnx):
    result = run_bench(BuildOptions(target="host", model=tiny_onnx, backend="onnxruntime", out=tmp_path / "out"),
                       runs=120, warmup=5)
    report = json.loads((result.out_dir / "report.json").read_text())
    assert report["bench"]["runs"] == 120 and report["bench"]["warmup"] == 5
    assert report["bench"]["latency_ms"]["p90"] >= report["bench"]["latency_ms"]["median"] > 0


def test_backends_side_by_side(tmp_path, tiny_tflite):
    comparison = compare_backends(BuildOptions(target="host", model=tiny_tflite, out=tmp_path), runs=10, warmup=1,
                                  rounds=2)
    rows = {row["backend"]: row for row in comparison["rows"]}
    # executorch compiles PyTorch programs only: its row says why it has no figures.
    assert "executorch" in rows.pop("executorch")["error"]
    assert set(rows) == {"tvm", "litert", "onnxruntime"}
    for name, row in rows.items():
        assert row["error"] is None and row["validation"]["passed"] is True
        assert row["bench"]["runs"] == 10 and row["bench"]["latency_ms"]["median"] > 0
        assert json.loads((tmp_path / name / "report.json").read_text())["bench"]["runs"] == 10
    table = (tmp_path / "comparison.md").read_text()
    assert all(f"| {name} | passed |" in table for name in rows)


def test_validation_failure_exits_1_and_leaves_nothing(tmp_path, tiny_tflite, monkeypatch):
    monkeypatch.setitem(validate.FLOAT_TOLERANCE, "float32", -1.0)  # no result can be within this
    with pytest.raises(BuildError, match=r"validation failed for litert on host: output .* is off by") as err:
        _build(tmp_path, "host", tiny_tflite, "litert")
    assert err.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []


def test_unavailable_backend_for_model_format(tmp_path, tiny_onnx):
    with pytest.raises(BadInput, match="backend 'litert' compiles tflite models and cannot take a onnx model"):
        _build(tmp_path, "host", tiny_onnx, "litert")
    assert list(tmp_path.iterdir()) == []


FAST = pytest.mark.fast  # refused before any framework is imported (bad model files: test_model's fast tests)


@pytest.mark.parametrize("args,message", [
    (["--target", "host", "--model", "{tmp}/missing.tflite"], "missing.tflite does not exist"),
    (["--target", "host", "--model", "{tmp}/garbage.tflite"], "garbage.tflite"),
    (["--target", "host", "--model", "{tmp}/garbage.onnx"], "garbage.onnx"),
    pytest.param(["--target", "nope"], "unknown target 'nope'", marks=FAST),
    pytest.param(["--target", "host", "--backend", "nope"], "unknown backend 'nope'", marks=FAST),
    pytest.param(["--target", "host", "--input-shape", "oops"], "--input-shape 'oops'", marks=FAST),
])
def test_cli_bad_input_exits_2(tmp_path, args, message):
    (tmp_path / "garbage.tflite").write_bytes(b"\x00garbage bytes, not a flatbuffer" * 8)
    (tmp_path / "garbage.onnx").write_bytes(b"\xffnot a protobuf at all" * 8)
    argv = ["build", "--out", str(tmp_path / "out")] + [a.format(tmp=tmp_path) for a in args]
    result = invoke(*argv)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_op_the_backend_cannot_import_is_named_with_a_backend_that_can(tmp_path, hybrid_tflite):
    result = invoke("build", "--target", "host", "--backend", "tvm", "--model", str(hybrid_tflite),
                    "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "backend 'tvm' cannot import op FULLY_CONNECTED (dynamic-range quantized)" in result.stderr
    assert "try --backend litert" in result.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.slow  # the default model: test_model; rpi4 tvm: test_linux_boards; the CLI build: the tests above
def test_default_model_builds_for_rpi4_via_cli(tmp_path):
    result = invoke("build", "--target", "rpi4", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "validation: passed" in result.stdout and "wall time under emulation" in result.stdout
    # The default backend is auto: three backends counted under emulation; LiteRT's bundle executes the fewest
    # instructions on the digits CNN (deterministic counts) and ships. executorch is left to --backend executorch
    # for a Keras model (its conversion is slow), and its row says so.
    report = _check_report(tmp_path / "out", "rpi4", "litert")
    selection = report["selection"]
    candidates = {c["backend"]: c for c in selection["candidates"]}
    assert "build it with --backend executorch" in candidates.pop("executorch")["error"]
    assert selection["by"] == "instructions" and all(c["validated"] for c in candidates.values())
    assert "--backend auto chose litert by instructions per inference" in result.stdout
    assert report["validation"]["accuracy"] > 0.9  # real held-out digits, not random inputs
    assert report["validation"]["samples"] == 32
