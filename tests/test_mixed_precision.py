"""Mixed precision: --quantize int16x8 (16-bit activations, int8 weights) and --quantize mixed (int8 but for the
layers int8 hurts most, kept in float until the accuracy drop is within the budget), built and validated with
litert; the per-layer sensitivity table in report.json and report.md."""

import json

import pytest

from toolchain.errors import BadInput
from toolchain.pipeline.build import BuildOptions, build


def test_mixed_keeps_the_sensitive_layers_float_within_the_budget(sensitive_model, tmp_path):
    from toolchain.pipeline.report import summary

    model, calibration, eval_data = sensitive_model
    budget = 1.0
    result = build(BuildOptions(target="host", model=model, backend="litert", out=tmp_path / "b", quantize="mixed",
                                calibration=calibration, eval_data=eval_data, accuracy_budget=budget, samples=8))
    quantization = result.report["quantization"]
    mixed = quantization["mixed"]
    compared = mixed["compared"]
    int8_drop = 100 * (compared["float"]["accuracy"] - compared["int8"]["accuracy"])
    mixed_drop = mixed["steps"][-1]["drop_points"]
    assert compared["float"]["accuracy"] == 1.0
    assert int8_drop > budget and compared["int8"]["changed_predictions"] > 0, mixed  # int8 costs too much ...
    assert mixed_drop <= budget and quantization["accuracy"]["change_points"] >= -budget, mixed  # ... mixed does not
    assert "wide_range" in " ".join(mixed["float_layers"]), mixed
    assert any("hidden" in layer["layer"] and not layer["kept_float"] for layer in mixed["layers"])
    assert compared["int8"]["bytes"] < compared["mixed"]["bytes"] < compared["float"]["bytes"]
    assert [step["float_layers"] for step in mixed["steps"]] == list(range(len(mixed["steps"])))
    assert result.report["validation"]["passed"]
    markdown = (result.out_dir / "report.md").read_text()
    assert "per-layer sensitivity to int8" in markdown and "| float |" in markdown
    assert not mixed["int8_within_budget"] and "Kept in float: " in markdown
    assert f"layer{'s' * (len(mixed['float_layers']) > 1)} kept float" in summary(result.report)


def test_mixed_on_the_default_model_reports_the_table_and_meets_a_tight_budget(tmp_path):
    """The default model loses no prediction to full int8 on its whole test split (450 samples), so a budget of 0
    keeps no layer float, and the report says so with the measured drop; a model that needs float layers is
    sensitive_model's."""
    from toolchain.pipeline.report import summary

    result = build(BuildOptions(target="host", backend="litert", out=tmp_path / "b", quantize="mixed",
                                accuracy_budget=0.0, samples=8))
    mixed = result.report["quantization"]["mixed"]
    layers = mixed["layers"]
    assert {layer["op"] for layer in layers} >= {"CONV_2D", "FULLY_CONNECTED"}
    ranking = [layer["output_error_alone"] for layer in layers]
    assert ranking == sorted(ranking, reverse=True) and ranking[0] > 0
    assert mixed["eval"]["samples"] == 450  # the whole held-out split
    int8 = mixed["compared"]["int8"]
    assert mixed["steps"][-1]["drop_points"] <= 0.0
    assert mixed["int8_within_budget"] == (int8["drop_points"] <= 0.0) == (mixed["float_layers"] == [])
    # The float layers are the most sensitive ones, as many as the search needed.
    assert [layer["layer"] for layer in layers if layer["kept_float"]] == mixed["float_layers"]
    assert mixed["float_layers"] == [layer["layer"] for layer in layers[:len(mixed["float_layers"])]]
    assert len(mixed["steps"]) == len(mixed["float_layers"]) + 1
    report = json.loads((result.out_dir / "report.json").read_text())
    assert report["quantization"]["mode"] == "mixed"
    if mixed["int8_within_budget"]:
        said = "full int8 is within the budget: no layer kept float"
        assert f"{said} (measured drop {int8['drop_points']:.2f} points" in summary(result.report)
        assert said.capitalize() in (result.out_dir / "report.md").read_text().replace("**", "")


def test_int16x8_builds_and_validates_with_litert(tmp_path):
    import tflite

    result = build(BuildOptions(target="host", backend="litert", out=tmp_path / "b", quantize="int16x8", samples=8))
    assert result.report["validation"]["passed"]
    model = tflite.Model.GetRootAsModel((result.out_dir / "bundle" / "model.tflite").read_bytes(), 0)
    graph = model.Subgraphs(0)
    dtypes = {graph.Tensors(i).Type() for i in range(graph.TensorsLength())}
    assert tflite.TensorType.INT16 in dtypes and tflite.TensorType.INT8 in dtypes


@pytest.mark.fast
@pytest.mark.parametrize("options,message", [
    ({"backend": "tvm", "quantize": "int16x8"}, "backend 'tvm' cannot run 16-bit activations"),
    ({"backend": "onnxruntime", "quantize": "mixed"}, "--quantize mixed makes TFLite models"),
    ({"backend": "litert", "quantize": "int8", "accuracy_budget": 1.0}, "--accuracy-budget applies only to"),
    ({"backend": "litert", "quantize": "mixed", "accuracy_budget": "lots"}, "--accuracy-budget takes percentage"),
    ({"backend": "litert", "quantize": "int16x8", "quantize_io": "int8"}, "--quantize-io applies only to"),
])
def test_mixed_precision_option_mistakes(options, message):
    from toolchain import backends
    from toolchain.convert.quantize import plan

    backend = backends.get(options["backend"])
    with pytest.raises(BadInput, match=message):
        plan(options["quantize"], options.get("quantize_io"), None, None, None, backend, has_data=True,
             accuracy_budget=options.get("accuracy_budget"))
