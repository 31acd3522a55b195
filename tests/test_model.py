"""Model ingest, reference runs, conversion and the default model, on tiny models built here."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolchain.convert import to_onnx, to_tflite
from toolchain.errors import EXIT_BAD_INPUT, BadInput
from toolchain.model import load_model, model_format
from toolchain.model.default import default_model
from toolchain.model.reference import framework_versions, reference_name, reference_outputs
from toolchain.model.summary import describe

from conftest import full_int8_tflite

# The tiny Keras model: image [6, 6, 2] -> Conv2D(4, 3, valid) -> DepthwiseConv2D(3, same) -> Flatten -> Dense(3).
# MACs: conv 4*4*4 outputs x 3*3*2 = 1152, depthwise 4*4*4 x 3*3 = 576, dense 64 x 3 = 192.
TINY_MACS = 1152 + 576 + 192
# Params: conv 3*3*2*4 + 4, depthwise 3*3*4 + 4, dense 64*3 + 3.
TINY_PARAMS = 76 + 40 + 195
ONNX_WEIGHT = np.arange(6, dtype=np.float32).reshape(3, 2) / 10
ONNX_BIAS = np.array([0.5, -0.5], dtype=np.float32)


@pytest.fixture(scope="module")
def tf_models(tmp_path_factory) -> dict[str, Path]:
    """The tiny Keras model as .keras, .h5, SavedModel, float TFLite and full-integer int8 TFLite."""
    import keras

    folder = tmp_path_factory.mktemp("tf_models")
    keras.utils.set_random_seed(7)
    image = keras.Input((6, 6, 2), name="image")
    # Random biases: the TFLite converter drops zero biases and shares equal constants.
    bias = "random_normal"
    x = keras.layers.Conv2D(4, 3, activation="relu", bias_initializer=bias)(image)
    x = keras.layers.DepthwiseConv2D(3, padding="same", bias_initializer=bias)(x)
    x = keras.layers.Flatten()(x)
    probs = keras.layers.Dense(3, activation="softmax", name="probs", bias_initializer=bias)(x)
    model = keras.Model(image, probs)
    paths = {"keras": folder / "tiny.keras", "h5": folder / "tiny.h5", "savedmodel": folder / "tiny_saved"}
    model.save(paths["keras"])
    model.save(paths["h5"])
    model.export(paths["savedmodel"], verbose=False)

    samples = np.random.default_rng(0).random((16, 1, 6, 6, 2), dtype=np.float32)
    paths["int8"] = full_int8_tflite(model, lambda: ([sample] for sample in samples), folder / "tiny_int8.tflite")
    paths["tflite"] = to_tflite(load_model(paths["keras"]), folder / "converted").path
    return paths


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    """y = x @ W + b with a symbolic batch dim "N": x [N, 3] -> y [N, 2]."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(ONNX_WEIGHT, "W"), numpy_helper.from_array(ONNX_BIAS, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the installed ONNX Runtime reads
    path = tmp_path_factory.mktemp("onnx") / "affine.onnx"
    onnx.save(model, str(path))
    return path


def random_inputs(info, samples: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.random((samples, *t.shape), dtype=np.float32) for t in info.inputs]


def assert_outputs_close(a: list[np.ndarray], b: list[np.ndarray], atol: float = 1e-5) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


# --- load_model -------------------------------------------------------------------------------


def test_keras_model_fields(tf_models):
    info = load_model(tf_models["keras"])
    assert info.format == "keras"
    assert info.sha256 == hashlib.sha256(tf_models["keras"].read_bytes()).hexdigest()
    assert [(t.name, t.shape, t.dtype, t.quant) for t in info.inputs] == [("image", (1, 6, 6, 2), "float32", None)]
    assert [(t.name, t.shape, t.dtype) for t in info.outputs] == [("probs", (1, 3), "float32")]
    assert info.ops == {"Conv2D": 1, "DepthwiseConv2D": 1, "Flatten": 1, "Dense": 1}
    assert info.params == TINY_PARAMS
    assert info.macs == TINY_MACS
    assert info.stem == "tiny"


def test_h5_reads_like_keras(tf_models):
    keras_info, h5_info = load_model(tf_models["keras"]), load_model(tf_models["h5"])
    assert (h5_info.inputs, h5_info.outputs, h5_info.ops) == (keras_info.inputs, keras_info.outputs, keras_info.ops)
    assert (h5_info.params, h5_info.macs) == (TINY_PARAMS, TINY_MACS)


def test_savedmodel_fields(tf_models):
    info = load_model(tf_models["savedmodel"])
    assert info.format == "savedmodel"
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [("image", (1, 6, 6, 2), "float32")]
    assert [t.shape for t in info.outputs] == [(1, 3)]
    assert {"Conv2D", "DepthwiseConv2dNative", "MatMul", "Softmax"} <= set(info.ops)
    assert info.params == TINY_PARAMS
    assert info.macs == TINY_MACS
    assert info.sha256 == load_model(tf_models["savedmodel"]).sha256  # a folder hashes the same every time


def test_float_tflite_fields(tf_models):
    info = load_model(tf_models["tflite"])
    assert info.format == "tflite"
    assert [(t.shape, t.dtype, t.quant) for t in info.inputs] == [((1, 6, 6, 2), "float32", None)]
    assert [(t.shape, t.dtype) for t in info.outputs] == [((1, 3), "float32")]
    assert info.ops == {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1}
    assert info.macs == TINY_MACS
    # Weights and biases, plus the RESHAPE target shape (2 elements).
    assert info.params == TINY_PARAMS + 2


def test_int8_tflite_quantization(tf_models):
    info = load_model(tf_models["int8"])
    (image,), (probs,) = info.inputs, info.outputs
    assert (image.shape, image.dtype, probs.dtype) == ((1, 6, 6, 2), "int8", "int8")
    assert image.is_quantized and probs.is_quantized
    assert image.quant[0] > 0 and -128 <= image.quant[1] <= 127
    assert probs.quant == pytest.approx((1 / 256, -128))  # the converter's fixed softmax output range
    assert info.macs == TINY_MACS


def test_onnx_symbolic_batch_pinned_to_one(onnx_path):
    info = load_model(onnx_path)
    assert info.format == "onnx"
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [("x", (1, 3), "float32")]
    assert [(t.name, t.shape, t.dtype) for t in info.outputs] == [("y", (1, 2), "float32")]
    assert info.ops == {"MatMul": 1, "Add": 1}
    assert info.params == 8
    assert info.macs == 6


def test_input_shapes_override(onnx_path, tf_models):
    info = load_model(onnx_path, {"x": (4, 3)})
    assert (info.inputs[0].shape, info.outputs[0].shape, info.macs) == ((4, 3), (4, 2), 24)
    keras_info = load_model(tf_models["keras"], {"image": (2, 6, 6, 2)})
    assert (keras_info.outputs[0].shape, keras_info.macs) == ((2, 3), 2 * TINY_MACS)
    # from_keras_model kept the batch dynamic (-1 in the shape signature), so it can be resized.
    dynamic_tflite = load_model(tf_models["int8"], {"serving_default_image:0": (2, 6, 6, 2)})
    assert (dynamic_tflite.outputs[0].shape, dynamic_tflite.macs) == ((2, 3), 2 * TINY_MACS)
    (outputs,) = reference_outputs(dynamic_tflite, [np.zeros((3, 2, 6, 6, 2), np.int8)])
    assert outputs.shape == (3, 2, 3)
    with pytest.raises(BadInput, match="does not fit"):
        load_model(onnx_path, {"x": (1, 5)})  # the 3 is fixed
    with pytest.raises(BadInput, match="does not fit"):
        load_model(tf_models["tflite"], {"image": (2, 6, 6, 2)})  # to_tflite pins the batch


def test_tflite_and_onnx_reading_does_not_import_tensorflow(tf_models, onnx_path):
    script = (
        "import sys; from toolchain.model import load_model; "
        f"load_model({str(tf_models['int8'])!r}); load_model({str(onnx_path)!r}); "
        "assert 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


@pytest.mark.parametrize(
    "name, content, message",
    [  # fast: refused before ONNX or Keras is imported
        pytest.param("missing.tflite", None, "does not exist", marks=pytest.mark.fast),
        pytest.param("garbage.tflite", b"\x00\x01 certainly not a flatbuffer" * 10, "is not a TFLite model",
                     marks=pytest.mark.fast),
        ("garbage.onnx", b"\xff\xfe\x00 certainly not a protobuf" * 10, "is not a valid ONNX model"),
        pytest.param("weights.bin", b"torch", "unknown model format '.bin'", marks=pytest.mark.fast),
        pytest.param("weights.pt", b"torch", "is not a PyTorch archive", marks=pytest.mark.fast),  # before torch loads
        pytest.param("folder", "dir", "without saved_model.pb", marks=pytest.mark.fast),
        ("garbage.keras", b"not a zip", "cannot be loaded as a Keras model"),
    ],
)
def test_bad_model_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInput, match=message) as caught:
        load_model(path)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_input_name(onnx_path, tf_models):
    for path in (onnx_path, tf_models["tflite"]):
        with pytest.raises(BadInput, match="has no input named 'nope'") as caught:
            load_model(path, {"nope": (1, 3)})
        assert str(path) in str(caught.value)


# --- reference runs ---------------------------------------------------------------------------


def test_reference_agrees_across_tf_formats(tf_models):
    keras_info = load_model(tf_models["keras"])
    inputs = random_inputs(keras_info)
    expected = reference_outputs(keras_info, inputs)
    assert expected[0].shape == (4, 1, 3)
    np.testing.assert_allclose(expected[0].sum(axis=-1), 1, rtol=1e-5)  # softmax rows
    for fmt in ("h5", "savedmodel", "tflite"):
        assert_outputs_close(reference_outputs(load_model(tf_models[fmt]), inputs), expected)


def test_reference_onnx_matches_numpy(onnx_path):
    info = load_model(onnx_path)
    inputs = random_inputs(info, samples=5)
    (outputs,) = reference_outputs(info, inputs)
    assert outputs.shape == (5, 1, 2)
    assert_outputs_close([outputs], [inputs[0] @ ONNX_WEIGHT + ONNX_BIAS])


def test_reference_int8_tflite_takes_quantized_data(tf_models):
    info = load_model(tf_models["int8"])
    quantized = np.random.default_rng(2).integers(-128, 128, size=(3, *info.inputs[0].shape), dtype=np.int8)
    (outputs,) = reference_outputs(info, [quantized])
    assert (outputs.shape, outputs.dtype) == ((3, 1, 3), np.int8)
    with pytest.raises(BadInput, match="is int8, got float32"):
        reference_outputs(info, random_inputs(info))


def test_reference_rejects_wrong_sample_shape(onnx_path):
    info = load_model(onnx_path)
    with pytest.raises(BadInput, match=r"needs samples of shape \[1, 3\]"):
        reference_outputs(info, [np.zeros((2, 3), np.float32)])


def test_reference_name_and_versions(tf_models, onnx_path):
    keras_info, onnx_info = load_model(tf_models["keras"]), load_model(onnx_path)
    tflite_info = load_model(tf_models["int8"])
    assert [reference_name(i) for i in (keras_info, tflite_info, onnx_info)] == ["tensorflow", "litert", "onnxruntime"]
    assert set(framework_versions(reference_name(keras_info))) == {"tensorflow", "keras"}
    assert framework_versions(reference_name(tflite_info))["ai-edge-litert"].startswith("2.")
    assert "onnxruntime" in framework_versions(reference_name(onnx_info))


def test_model_format_from_name(tf_models, onnx_path):
    formats = {key: model_format(path) for key, path in tf_models.items()}
    assert formats == {
        "keras": "keras",
        "h5": "keras",
        "savedmodel": "savedmodel",
        "tflite": "tflite",
        "int8": "tflite",
    }
    assert model_format(onnx_path) == "onnx"


# --- conversion -------------------------------------------------------------------------------


def test_to_tflite_from_savedmodel(tf_models, tmp_path):
    saved = load_model(tf_models["savedmodel"])
    converted = to_tflite(saved, tmp_path)
    assert converted.path == tmp_path / "tiny_saved.tflite" and converted.format == "tflite"
    assert [t.shape for t in converted.inputs] == [(1, 6, 6, 2)]
    assert converted.macs == TINY_MACS
    inputs = random_inputs(saved)
    assert_outputs_close(reference_outputs(converted, inputs), reference_outputs(saved, inputs))
    assert to_tflite(converted, tmp_path / "again") is converted  # a .tflite passes through
    assert list(tmp_path.iterdir()) == [converted.path]  # nothing but the result is left behind


@pytest.mark.parametrize("source", ["keras", "savedmodel", "tflite"])
def test_to_onnx_round_trip(tf_models, tmp_path, source):
    info = load_model(tf_models[source])
    converted = to_onnx(info, tmp_path)
    assert converted.format == "onnx" and converted.path.suffix == ".onnx"
    assert [t.shape for t in converted.inputs] == [t.shape for t in info.inputs]
    assert converted.macs == TINY_MACS
    inputs = random_inputs(info)
    assert_outputs_close(reference_outputs(converted, inputs), reference_outputs(info, inputs))


def test_to_onnx_is_deterministic(tf_models, tmp_path):
    info = load_model(tf_models["tflite"])
    first, second = to_onnx(info, tmp_path / "a"), to_onnx(info, tmp_path / "b")
    assert first.path.read_bytes() == second.path.read_bytes()


def test_conversions_keep_output_order_and_names(tmp_path):
    import keras

    features = keras.Input((4,), name="features")
    two_outputs = keras.Model(
        features, [keras.layers.Dense(2, name="z")(features), keras.layers.Dense(3, name="a")(features)]
    )
    sequential = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(2, name="scores")])
    for model, expected in ((two_outputs, [("z", (1, 2)), ("a", (1, 3))]), (sequential, [("scores", (1, 2))])):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        info = load_model(path)
        assert [(t.name, t.shape) for t in info.outputs] == expected
        onnx_info, tflite_info = to_onnx(info, tmp_path / "onnx"), to_tflite(info, tmp_path / "tflite")
        assert [(t.name, t.shape) for t in onnx_info.outputs] == expected
        assert [t.shape for t in tflite_info.outputs] == [shape for _, shape in expected]
        inputs = random_inputs(info)
        expected_outputs = reference_outputs(info, inputs)
        assert_outputs_close(reference_outputs(onnx_info, inputs), expected_outputs)
        assert_outputs_close(reference_outputs(tflite_info, inputs), expected_outputs)


def test_onnx_conversions_of_onnx(onnx_path, tmp_path):
    info = load_model(onnx_path)
    assert to_onnx(info, tmp_path) is info
    with pytest.raises(BadInput, match="cannot convert ONNX model .* to TFLite; use --backend onnxruntime or tvm"):
        to_tflite(info, tmp_path)


# --- describe ---------------------------------------------------------------------------------


def test_describe(tf_models):
    text = describe(load_model(tf_models["int8"]))
    assert "tiny_int8.tflite" in text
    assert "1x6x6x2" in text and "int8" in text and "scale 0.00390625, zero point -128" in text
    assert "CONV_2D" in text and "DEPTHWISE_CONV_2D" in text
    assert f"MACs    {TINY_MACS:,}" in text


# --- default model ----------------------------------------------------------------------------


def test_default_model_trains_once_and_is_accurate(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEYARD_CACHE", str(tmp_path))
    model_path, dataset_path = default_model()
    assert model_path.name == "digits_cnn.keras" and model_path.is_relative_to(tmp_path / "default-model")
    metrics = json.loads((model_path.parent / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9

    data = np.load(dataset_path)
    assert data["x_train"].shape[1:] == (8, 8, 1) and data["x_train"].dtype == np.float32
    assert len(data["x_test"]) == len(data["y_test"]) == 450
    info = load_model(model_path)
    (probabilities,) = reference_outputs(info, [data["x_test"][:, np.newaxis]])
    assert np.mean(probabilities[:, 0].argmax(axis=-1) == data["y_test"]) >= 0.9

    # A second call, here or in a fresh process, reuses the cache without importing TensorFlow.
    stamp = model_path.stat().st_mtime_ns
    assert default_model() == (model_path, dataset_path) and model_path.stat().st_mtime_ns == stamp
    script = (
        "import sys; from toolchain.model.default import default_model; default_model(); "
        "assert 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert not [p for p in model_path.parent.parent.iterdir() if p.name.startswith(".")]  # no staging left
