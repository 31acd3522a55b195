"""The vela backend: int8 TFLite -> Vela for an Ethos-U -> estimate, C array; float models refused.

Nothing here runs an Ethos-U: a build's figures are Vela's performance estimate, and validation says
it did not run. The MLPerf Tiny models are used where the shared folder exists (a clone has none).
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from toolchain.backends import get
from toolchain.backends.base import CompileRequest
from toolchain.pipeline.build import BuildOptions, build
from toolchain.pipeline.report import summary
from toolchain.errors import BadInput
from toolchain.model import load_model
from toolchain.target.settings import with_settings
from toolchain.target.profile import load_target

from conftest import full_int8_tflite, invoke

# TF warns when converting to int8 inputs without input statistics: expected, the calibration gives them.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")

MLPERF_TINY = Path("/work/shared/models/mlperf_tiny")
TARGET = "corstone300-ethos-u55"


@pytest.fixture(scope="module")
def tiny_int8_tflite(tiny_keras, tmp_path_factory) -> Path:
    """The tiny CNN quantized to full int8 (int8 inputs and outputs), calibrated on seeded random images."""
    import keras

    rng = np.random.default_rng(0)
    calibration = lambda: ([rng.random((1, 8, 8, 1), dtype=np.float32)] for _ in range(16))  # noqa: E731
    return full_int8_tflite(keras.models.load_model(tiny_keras), calibration,
                            tmp_path_factory.mktemp("int8") / "tiny_cnn_int8.tflite")


def _compile(model_path: Path, target, bundle_dir: Path) -> dict:
    bundle_dir.mkdir(parents=True)
    return get("vela").compile(CompileRequest(load_model(model_path), target, bundle_dir, lambda _: None)).manifest


def _check_estimate(estimate: dict, target) -> None:
    assert estimate["label"] == "Vela performance estimate"
    assert estimate["accelerator_config"] == target.ethos_u["accelerator_config"]
    assert estimate["npu_cycles"] > 0 and estimate["sram_bytes"] > 0 and estimate["model_bytes"] > 0
    assert estimate["inference_ms"] == pytest.approx(estimate["npu_cycles"] / (target.clock_mhz * 1e3))
    assert estimate["operators"]["npu"] > 0


def test_int8_build_has_estimate_and_c_array(tmp_path, tiny_int8_tflite):
    result = build(BuildOptions(target=TARGET, model=tiny_int8_tflite, out=tmp_path / "out"))
    assert result.report["validation"]["ran"] is False and result.report["bench"]["latency_ms"] is None
    bundle_dir = result.out_dir / "bundle"
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    _check_estimate(manifest["estimate"], load_target(TARGET))
    assert manifest["memory"]["ram_bytes"] == manifest["estimate"]["sram_bytes"]
    assert manifest["estimate"]["operators"]["cpu"] == 0  # conv, pool and dense all go to the NPU

    optimized = (bundle_dir / "tiny_cnn_int8_vela.tflite").read_bytes()
    header, source = (bundle_dir / "tiny_cnn_int8.h").read_text(), (bundle_dir / "tiny_cnn_int8.c").read_text()
    assert f"#define TINY_CNN_INT8_MODEL_BYTES {len(optimized)}" in header
    assert "#define TINY_CNN_INT8_INPUT0_TYPE int8_t" in header
    assert source.count("0x") == len(optimized)
    compiler = shutil.which("arm-none-eabi-gcc") or shutil.which("gcc")
    subprocess.run([compiler, "-std=c99", "-Wall", "-Werror", "-c", "tiny_cnn_int8.c", "-o", str(tmp_path / "m.o")],
                   cwd=bundle_dir, check=True)


def test_mac_count_is_a_setting(tmp_path, tiny_int8_tflite):
    u55 = load_target(TARGET)
    cycles = {}
    for config in ("ethos-u55-128", "ethos-u55-256"):
        target = with_settings(u55, {"ethos_u.accelerator_config": config})
        cycles[config] = _compile(tiny_int8_tflite, target, tmp_path / config)["estimate"]["npu_cycles"]
    assert cycles["ethos-u55-256"] < cycles["ethos-u55-128"]


def test_float_model_exits_2_with_quantize_hint(tiny_tflite):
    result = invoke("build", "--target", TARGET, "--model", str(tiny_tflite))
    assert result.returncode == 2
    assert "float model" in result.stderr and "--quantize int8" in result.stderr


def test_quantized_keras_model_compiles(tmp_path, tiny_keras):
    from toolchain.convert.quantize import to_quantized_tflite

    info = load_model(tiny_keras)
    calibration = np.random.default_rng(1).random((16, *info.inputs[0].shape), dtype=np.float32)
    quantized = to_quantized_tflite(info, tmp_path, "int8", calibration)
    assert quantized.inputs[0].dtype == "int8" and quantized.outputs[0].dtype == "int8"
    manifest = _compile(quantized.path, load_target(TARGET), tmp_path / "bundle")
    assert manifest["estimate"]["operators"]["npu"] > 0


def test_unknown_vela_setting_names_the_profile(tmp_path, tiny_int8_tflite):
    target = with_settings(load_target(TARGET), {"ethos_u.system_config": "No_Such_System"})
    with pytest.raises(BadInput, match=r"corstone300-ethos-u55\.toml: Vela rejects .*No_Such_System"):
        _compile(tiny_int8_tflite, target, tmp_path / "bundle")


@pytest.mark.skipif(not MLPERF_TINY.is_dir(), reason="the MLPerf Tiny models live in the shared folder")
@pytest.mark.parametrize("model", ["kws_ref_model", "vww_96_int8"])
def test_mlperf_tiny_int8_models(tmp_path, model):
    for name in (TARGET, "corstone300-ethos-u65"):
        target = load_target(name)
        estimate = _compile(MLPERF_TINY / f"{model}.tflite", target, tmp_path / name)["estimate"]
        _check_estimate(estimate, target)
        assert estimate["operators"]["cpu"] == 0


@pytest.mark.skipif(not MLPERF_TINY.is_dir(), reason="the MLPerf Tiny models live in the shared folder")
def test_mlperf_tiny_float_model_is_refused(tmp_path):
    with pytest.raises(BadInput, match="--quantize int8"):
        _compile(MLPERF_TINY / "vww_96_float.tflite", load_target(TARGET), tmp_path / "bundle")


@pytest.mark.fast
def test_profiles_name_every_vela_setting():
    for name in (TARGET, "corstone300-ethos-u65"):
        target = load_target(name)
        assert set(target.ethos_u) == {"accelerator_config", "config_file", "system_config", "memory_mode"}
        assert target.default_backend == "vela" and target.runners == ()


def test_default_model_is_quantized_and_estimated_in_the_report(tmp_path):
    report = build(BuildOptions(target=TARGET, out=tmp_path / "out")).report
    q = report["quantization"]
    assert (q["mode"], q["io"], q["calibration"]["source"]) == ("int8", "int8", "digits.npz (x_train)")
    _check_estimate(report["estimate"], load_target(TARGET))
    assert report["memory"]["ram_bytes"] == report["estimate"]["sram_bytes"]
    assert report["validation"]["status"].startswith("built, not run on target: no Ethos-U NPU here")
    # The backend's sections reach the console summary and report.md without the core naming them.
    assert [s["key"] for s in report["sections"]] == ["memory", "estimate"]
    lines = summary(report).splitlines()
    assert f"memory: flash {report['memory']['flash_bytes']:,} B, RAM {report['memory']['ram_bytes']:,} B" in lines
    assert any(line.startswith(f"{report['estimate']['label']}: {report['estimate']['npu_cycles']:,} NPU cycles")
               for line in lines)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Memory" in markdown and f"## {report['estimate']['label']}" in markdown
    assert f"| NPU cycles per inference | {report['estimate']['npu_cycles']:,} |" in markdown
