"""The hls4ml backend: Keras -> HLS project for an FPGA part -> bit-accurate C simulation, the emulated run.

The C simulation computes in the design's fixed-point types, so it differs from Keras by rounding:
validation allows an error that follows the precision (manifest "tolerance").
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

from toolchain.pipeline import validate
from toolchain.backends import get
from toolchain.backends.base import CompileRequest
from toolchain.backends.hls4ml import CSIM_LIBRARY, PROJECT, fraction_bits, hls_config, tolerance
from toolchain.pipeline.build import BuildOptions, build
from toolchain.errors import BadInput, MissingTool
from toolchain.model import load_model
from toolchain.model.reference import reference_outputs
from toolchain.runners import get as get_runner
from toolchain.runners import run_bundle
from toolchain.target.settings import with_settings
from toolchain.target.profile import load_target

TARGET = "alveo-u250"
DENSE_PRECISION = "ap_fixed<24,10>"


def _keras(path: Path):
    import keras

    return keras.models.load_model(path, compile=False)


def _compile(model_path: Path, settings: dict, bundle_dir: Path) -> dict:
    bundle_dir.mkdir(parents=True)
    target = with_settings(load_target(TARGET), settings)
    return get("hls4ml").compile(CompileRequest(load_model(model_path), target, bundle_dir, lambda _: None)).manifest


def _csim_error(model_path: Path, bundle_dir: Path, manifest: dict, samples: int = 8) -> tuple[float, float]:
    """(max |C simulation - Keras|, the tolerance the manifest allows), on seeded random inputs."""
    info = load_model(model_path)
    inputs = validate.make_inputs(info, samples).tensors
    result = run_bundle(get_runner("csim"), load_target(TARGET), bundle_dir, manifest, inputs, warmup=1, repeat=2)
    assert result.emulated and len(result.timings_ns) == 2
    reference = reference_outputs(info, inputs)
    error = max(float(np.max(np.abs(got - want))) for got, want in zip(result.outputs, reference))
    scale = max(1.0, max(float(np.max(np.abs(want))) for want in reference))
    return error, manifest["tolerance"]["float32"] * scale


@pytest.fixture(scope="module")
def built(tiny_keras, tmp_path_factory):
    """The tiny CNN for the U250, its Dense layer in a wider type than the rest (a per-layer precision)."""
    dense = _keras(tiny_keras).layers[-1].name
    bundle_dir = tmp_path_factory.mktemp("hls4ml") / "bundle"
    manifest = _compile(tiny_keras, {f"fpga.layer_precision.{dense}": DENSE_PRECISION}, bundle_dir)
    return bundle_dir, manifest, dense


def test_csim_validates_within_the_precision_tolerance(built, tiny_keras, tmp_path):
    bundle_dir, manifest, _ = built
    error, allowed = _csim_error(tiny_keras, bundle_dir, manifest)
    assert 0 < error <= allowed  # fixed point: close to Keras, and not float
    moved = shutil.copytree(bundle_dir, tmp_path / "moved")  # the simulation finds its weights from anywhere
    assert _csim_error(tiny_keras, moved, manifest)[0] == error


def test_manifest_says_what_exists_without_synthesis(built):
    bundle_dir, manifest, dense = built
    fpga = manifest["fpga"]
    assert fpga["part"] == "xcu250-figd2104-2L-e" and fpga["clock_mhz"] == 200 and fpga["io_type"] == "io_stream"
    assert fpga["resources"] is None and fpga["latency"] is None and "synthesis" in fpga["estimate"]
    assert fpga["csim_build_seconds"] > 0
    layers = {layer["name"]: layer for layer in fpga["layers"]}
    assert layers[dense]["types"]["weight"] == "fixed<24,10,TRN,WRAP,0>"
    assert any(layer["types"].get("weight") == "fixed<18,8,TRN,WRAP,0>" for layer in layers.values())
    assert manifest["tolerance"]["float32"] == tolerance(["ap_fixed<18,8>", DENSE_PRECISION])
    assert (bundle_dir / PROJECT / "build_prj.tcl").is_file() and (bundle_dir / CSIM_LIBRARY).is_file()
    assert manifest["entry"]["argv"] == ["python3", "./run_csim.py"]


@pytest.mark.fast
def test_precision_sets_the_tolerance():
    assert fraction_bits("ap_fixed<16,6>") == 10 and fraction_bits("ap_ufixed<8, 0, AP_RND, AP_SAT>") == 8
    assert fraction_bits("ap_int<8>") == 0
    assert tolerance(["ap_fixed<16,6>"]) == 64 / 1024
    assert tolerance(["ap_fixed<24,10>", "ap_fixed<16,6>"]) == tolerance(["ap_fixed<16,6>"])  # the narrowest rules
    with pytest.raises(BadInput, match="not an HLS fixed-point type"):
        fraction_bits("float32")


def test_unknown_layer_precision_names_the_layers(tiny_keras):
    fpga = {**load_target(TARGET).fpga, "layer_precision": {"no_such_layer": "ap_fixed<8,3>"}}
    with pytest.raises(BadInput, match="no layer named no_such_layer.*the layers are"):
        hls_config(_keras(tiny_keras), fpga)


@pytest.mark.skipif(shutil.which("vitis-run") is not None, reason="AMD Vitis is installed here")
def test_fpga_synth_without_vendor_tools_exits_3(tmp_path, tiny_keras):
    from toolchain.pipeline.fpga_synthesis import synthesize

    with pytest.raises(MissingTool, match="vitis-run is not installed; it comes with AMD Vitis") as caught:
        synthesize(BuildOptions(target=TARGET, model=tiny_keras, out=tmp_path / "out"))
    assert caught.value.exit_code == 3 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_wider_precision_gives_smaller_error(tiny_keras, tmp_path):
    errors = {}
    for precision in ("ap_fixed<12,4>", "ap_fixed<24,10>"):
        bundle_dir = tmp_path / precision.strip("ap_fixed<>").replace(",", "_")
        manifest = _compile(tiny_keras, {"fpga.precision": precision}, bundle_dir)
        errors[precision], allowed = _csim_error(tiny_keras, bundle_dir, manifest)
        assert errors[precision] <= allowed
    assert errors["ap_fixed<24,10>"] < errors["ap_fixed<12,4>"] / 16


def test_build_validates_with_the_precision_tolerance(tmp_path, tiny_keras):
    report = build(BuildOptions(target=TARGET, model=tiny_keras, out=tmp_path / "out")).report
    assert report["validation"]["passed"] is True
    assert report["validation"]["outputs"][0]["tolerance"] >= tolerance(["ap_fixed<18,8>"])
    assert report["bench"]["runner"] == "csim" and report["bench"]["emulated"] is True
    assert report["fpga"]["resources"] is None and "synthesis" in report["fpga"]["estimate"]


@pytest.mark.slow  # three or more C simulations: a minute or two
def test_auto_precision_widens_the_sensitive_layer_within_the_budget(sensitive_model, tmp_path):
    """--precision auto: the wide-range layer (one huge unit beside the small ones that carry the class) costs the
    all-narrow design most of its accuracy; the search widens it, the others stay narrower, and the budget holds."""
    model, calibration, eval_data = sensitive_model
    budget = 5.0
    result = build(BuildOptions(target=TARGET, model=model, out=tmp_path / "b", auto_precision=True,
                                calibration=calibration, eval_data=eval_data, accuracy_budget=budget, samples=8))
    chosen = result.report["fpga_precision"]
    widths = {layer["layer"]: int(layer["type"].split("<")[1].split(",")[0]) for layer in chosen["layers"]}
    assert chosen["steps"][0]["drop_points"] > budget, chosen  # the narrow start costs too much ...
    assert chosen["drop_points"] <= budget and chosen["steps"][-1]["types"] == {
        layer["layer"]: layer["type"] for layer in chosen["layers"]}  # ... the chosen design does not
    assert chosen["steps"][0]["widened"] == "wide_range"
    assert all(widths["wide_range"] > width for name, width in widths.items() if name != "wide_range"), widths
    assert any(layer["type"] == layer["start_type"] for layer in chosen["layers"])  # not everything widened
    assert chosen["c_simulations"] == len(chosen["steps"]) >= 2
    fpga = result.report["fpga"]
    assert {name: fpga["layer_precision"][name] for name in widths} == {
        layer["layer"]: layer["type"] for layer in chosen["layers"]}  # the bundle is the chosen design
    assert result.report["validation"]["passed"]
    assert "FPGA types chosen by measurement" in (result.out_dir / "report.md").read_text()


@pytest.mark.fast
@pytest.mark.parametrize("options,message", [
    ({"target": "host", "auto_precision": True}, "--precision auto chooses the ap_fixed types of an hls4ml build"),
    ({"target": TARGET, "auto_precision": True, "accuracy_budget": -1}, "--accuracy-budget takes percentage points"),
    ({"target": TARGET, "accuracy_budget": 1.0}, "--accuracy-budget applies only to --quantize mixed and --precision"),
])
def test_auto_precision_mistakes_exit_2(options, message, tmp_path):
    with pytest.raises(BadInput, match=message) as caught:
        build(BuildOptions(out=tmp_path / "b", **options))
    assert caught.value.exit_code == 2 and str(caught.value).count(". ") == 0 and not (tmp_path / "b").exists()


@pytest.mark.fast
def test_precision_auto_is_an_option_not_a_type():
    from toolchain.options import build_options

    opts = build_options(TARGET, None, None, None, None, None, 32, 1, precision="auto", accuracy_budget="2")
    assert opts.auto_precision and "fpga.precision" not in opts.settings
    assert not build_options(TARGET, None, None, None, None, None, 32, 1, precision="ap_fixed<8,3>").auto_precision
