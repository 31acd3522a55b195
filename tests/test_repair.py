"""Import repair: ONNX models TVM's frontend rejects as given import and validate once repaired; every repair is
listed in the report, and a repair that changed the results would fail validation against the original model."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolchain import convert
from toolchain.backends.tvm.frontend import imported_module
from toolchain.pipeline.build import BuildOptions, build
from toolchain.convert.repair import repair
from toolchain.errors import BuildError
from toolchain.model import ModelInfo, TensorInfo, load_model


def _save(path, nodes, outputs_width, initializers, opset, domains=()):
    """x[batch, 16] -> nodes -> y[batch, outputs_width], with a symbolic batch dimension; `domains`: other
    operator sets it imports, (domain, version)."""
    graph = helper.make_graph(
        nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs_width])], initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(*entry) for entry in (("", opset), *domains)])
    model.ir_version = helper.find_min_ir_version_for(model.opset_import[:1])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _weights():
    return numpy_helper.from_array(np.random.default_rng(3).normal(size=(16, 8)).astype(np.float32), "W")


@pytest.fixture(scope="module")
def opset9_slice(tmp_path_factory):
    """An opset-9 Slice (starts/ends as attributes): TVM's frontend reads Slice in its opset-13 form and fails."""
    return _save(tmp_path_factory.mktemp("opset9") / "slice9.onnx", [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Slice", ["h"], ["s"], starts=[2], ends=[6], axes=[1]),
        helper.make_node("Relu", ["s"], ["y"]),
    ], 4, [_weights()], opset=9)


@pytest.fixture(scope="module")
def dynamic_pad(tmp_path_factory):
    """Pads computed from the tensor's shape: TVM's frontend rejects a Pad whose pads are not constant."""
    constants = [numpy_helper.from_array(np.array([v], np.int64), name) for name, v in (("one", 1), ("four", 4),
                                                                                        ("zero", 0))]
    return _save(tmp_path_factory.mktemp("dynpad") / "dynamic_pad.onnx", [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Shape", ["h"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["width"], axis=0),
        helper.make_node("Div", ["width", "four"], ["pad"]),
        helper.make_node("Concat", ["zero", "pad", "zero", "pad"], ["pads"], axis=0),
        helper.make_node("Pad", ["h", "pads"], ["y"]),
    ], 12, [_weights(), *constants], opset=17)


@pytest.mark.parametrize("fixture,unrepaired_error,repairs", [
    ("opset9_slice", "Cannot cast", ["ONNX opset 9 upgraded to 17", "pinned input shapes written", "onnxslim"]),
    ("dynamic_pad", "Dynamic pads are not supported",
     ["pinned input shapes written",
      "folded constants and simplified the graph: 6 -> 2 nodes (Concat -1, Div -1, Gather -1, Shape -1)"]),
])
def test_repair_makes_a_model_tvm_rejects_import_and_validate(tmp_path, request, fixture, unrepaired_error, repairs):
    model = request.getfixturevalue(fixture)
    with pytest.raises(BuildError, match=unrepaired_error):  # as given, TVM cannot import it
        imported_module(load_model(model), lambda _: None)

    result = build(BuildOptions(target="host", model=model, backend="tvm", out=tmp_path / "out", samples=8))
    report = json.loads((result.out_dir / "report.json").read_text())
    assert report["validation"]["passed"] and report["validation"]["reference"] == "onnxruntime"
    listed = report["model"]["repairs"]
    assert listed[0] == "input 'x': dynamic dimensions [?, 16] pinned to [1, 16]"  # the loader's own repair
    assert len(listed) == 1 + len(repairs)
    for expected, line in zip(repairs, listed[1:]):
        assert expected in line
    markdown = (result.out_dir / "report.md").read_text()
    assert "## Import repairs" in markdown and all(f"- {line}" in markdown for line in listed)


def test_a_model_without_flaws_is_not_repaired(tmp_path, opset9_slice):
    static = load_model(opset9_slice, {"x": (1, 16)})
    assert static.repairs == []  # an input shape given by the user is no repair
    upgraded, lines = repair(static, tmp_path, lambda _: None)
    assert upgraded.path == tmp_path / "slice9.repaired.onnx" and lines[0].startswith("ONNX opset 9 upgraded")
    again, none = repair(upgraded, tmp_path / "again", lambda _: None)  # opset 17, static shapes, nothing to fold
    assert none == [] and again is upgraded and not (tmp_path / "again").exists()


def test_an_old_opset_importing_other_domains_is_upgraded(tmp_path):
    """Exporters list operator sets they do not use (com.microsoft, ai.onnx.ml): the upgrade keeps them, and onnx
    knows no IR version for com.microsoft's (the upgrade was an internal error)."""
    model = _save(tmp_path / "domains9.onnx", [helper.make_node("MatMul", ["x", "W"], ["h"]),
                                               helper.make_node("Relu", ["h"], ["y"])], 8, [_weights()], opset=9,
                  domains=(("com.microsoft", 1), ("ai.onnx.ml", 2)))
    upgraded, lines = repair(load_model(model, {"x": (1, 16)}), tmp_path, lambda _: None)
    assert lines[0] == "ONNX opset 9 upgraded to 17 (onnx.version_converter)"
    assert {(entry.domain, entry.version) for entry in onnx.load(upgraded.path).opset_import} == {
        ("", 17), ("com.microsoft", 1), ("ai.onnx.ml", 2)}


def test_a_repair_that_changes_results_fails_validation(tmp_path, dynamic_pad, monkeypatch):
    import onnxslim

    slim = onnxslim.slim

    def slim_and_damage(model, **kwargs):  # a simplifier with a bug: it scales the weights
        slimmed = slim(model, **kwargs)
        weights = next(t for t in slimmed.graph.initializer if t.name == "W")
        weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.01, "W"))
        return slimmed

    monkeypatch.setattr(onnxslim, "slim", slim_and_damage)
    with pytest.raises(BuildError, match="validation failed for onnxruntime on host"):
        build(BuildOptions(target="host", model=dynamic_pad, backend="onnxruntime", out=tmp_path / "out", samples=4))
    assert list(tmp_path.iterdir()) == []


def test_int8_tensors_of_a_converted_onnx_keep_the_sources_quantization(tmp_path):
    """ONNX keeps no scale on graph inputs and outputs; without the source's, an int8 output was judged as a float
    (a 1 LSB difference failed a 0.0128 tolerance) instead of in LSB."""
    scale = numpy_helper.from_array(np.array(0.05, np.float32), "scale")
    zero = numpy_helper.from_array(np.array(0, np.int8), "zero")
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["x", "scale", "zero"], ["real"]),
         helper.make_node("Relu", ["real"], ["r"]),
         helper.make_node("QuantizeLinear", ["r", "scale", "zero"], ["y"])], "int8_relu",
        [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 8])], initializer=[scale, zero])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "int8_relu.onnx")
    source = ModelInfo(tmp_path / "int8_relu.tflite", "tflite", "", [TensorInfo("x", (1, 8), "int8", (0.05, 0))],
                       [TensorInfo("y", (1, 8), "int8", (0.05, 0))])
    converted = convert._reload(tmp_path / "int8_relu.onnx", source)
    assert converted.format == "onnx"
    assert converted.inputs[0].quant == converted.outputs[0].quant == (0.05, 0)
