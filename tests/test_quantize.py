"""Post-training quantization: fp16, dynamic and int8 for Keras (TFLite converter) and ONNX (ONNX Runtime),
validated against the quantized model, with sizes and the accuracy change in the report; bad options exit 2.

The models and their labelled data are built here: three classes of noisy 8x8 bar images, and a
nearest-prototype ONNX classifier, so accuracy figures mean something and weights are big enough for
TFLite's dynamic-range quantization (it leaves tensors under 1,024 elements in float).
"""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from toolchain.pipeline.build import BuildOptions, build
from toolchain.errors import EXIT_BAD_INPUT, BadInput
from toolchain.pipeline.report import summary

from conftest import invoke

# TF warns when converting to int8 inputs without input statistics: the calibration gives them.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")

CLASSES = 3


def _bars(rng, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 8x8 images of a horizontal bar, a vertical bar or a diagonal; labels 0, 1, 2."""
    labels = rng.integers(0, CLASSES, samples)
    images = rng.normal(0.2, 0.25, (samples, 8, 8)).astype(np.float32)
    for image, label, offset in zip(images, labels, rng.integers(1, 7, samples)):
        if label == 0:
            image[offset, :] += 1.0
        elif label == 1:
            image[:, offset] += 1.0
        else:
            image[np.arange(8), np.arange(8)] += 1.0
    return images[..., np.newaxis], labels.astype(np.int32)


@pytest.fixture(scope="module")
def bars_data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(11)
    (x_train, y_train), (x_test, y_test) = _bars(rng, 240), _bars(rng, 90)
    path = tmp_path_factory.mktemp("bars") / "bars.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(scope="module")
def bars_keras(bars_data, tmp_path_factory) -> Path:
    """A small CNN trained for a few epochs on the bars (its dense layer has 4,608 weights)."""
    import keras

    data = np.load(bars_data)
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(CLASSES, activation="softmax", name="probabilities"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(data["x_train"], data["y_train"], batch_size=32, epochs=8, verbose=0)
    path = tmp_path_factory.mktemp("bars_keras") / "bars_cnn.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def prototypes_onnx(tmp_path_factory) -> tuple[Path, Path]:
    """(x[N,64] -> MatMul 64x64 -> MatMul 64x3 + b -> Softmax, its labelled data): a nearest-prototype
    classifier behind a random rotation, so the first MatMul holds 4,096 weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    prototypes = rng.normal(size=(CLASSES, 64)).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    weights = [numpy_helper.from_array(rotation.astype(np.float32), "W1"),
               numpy_helper.from_array((rotation.T @ prototypes.T).astype(np.float32), "W2"),
               numpy_helper.from_array(-0.5 * np.sum(prototypes**2, axis=1).astype(np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["s"]),
         helper.make_node("Add", ["s", "b"], ["logits"]), helper.make_node("Softmax", ["logits"], ["y"], axis=-1)],
        "prototypes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("prototypes")
    onnx.save(model, folder / "prototypes.onnx")
    labels = rng.integers(0, CLASSES, 300)
    x = (prototypes[labels] + rng.normal(scale=1.2, size=(300, 64))).astype(np.float32)
    np.savez(folder / "prototypes.npz", x_train=x[:200], y_train=labels[:200], x_test=x[200:], y_test=labels[200:])
    return folder / "prototypes.onnx", folder / "prototypes.npz"


def _quantized_build(out: Path, model: Path, backend: str, **options) -> dict:
    result = build(BuildOptions(target="host", model=model, backend=backend, out=out, **options))
    assert result.report["validation"]["passed"] is True
    return result.report


def _check_section(report: dict, mode: str, io: str, eval_samples: int) -> dict:
    q = report["quantization"]
    assert (q["mode"], q["io"]) == (mode, io)
    assert q["weight_bytes"]["quantized"] < q["weight_bytes"]["float"] / (1.8 if mode == "fp16" else 2.5)
    assert q["bytes"]["quantized"] < q["bytes"]["float"]
    a = q["accuracy"]
    assert a["samples"] == eval_samples and a["float"] >= 0.9  # the models are trained or built to classify
    assert abs(a["quantized"] - a["float"]) <= 0.05
    assert a["change_points"] == pytest.approx(100 * (a["quantized"] - a["float"]), abs=0.01)
    assert f"quantization: {mode} ({io} I/O)" in summary(report)
    return q


@pytest.mark.parametrize("mode,io,expected_io", [("fp16", None, "float32"), ("dynamic", None, "float32"),
                                                 ("int8", None, "int8"), ("int8", "float", "float32")])
def test_keras_model_quantized_with_litert(tmp_path, bars_keras, bars_data, mode, io, expected_io):
    report = _quantized_build(tmp_path / "out", bars_keras, "litert", data=bars_data, quantize=mode, quantize_io=io)
    q = _check_section(report, mode, expected_io, eval_samples=90)
    assert q["method"].startswith("TFLite converter")
    assert q["accuracy"]["data"] == "bars.npz (x_test)"
    assert q["calibration"] == ({"source": "bars.npz (x_train)", "samples": 200} if mode == "int8" else None)
    manifest = json.loads((tmp_path / "out" / "bundle" / "manifest.json").read_text())
    assert {t["dtype"] for t in manifest["inputs"] + manifest["outputs"]} == {expected_io}
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Quantization" in markdown and f"| float | {mode} |" in markdown


@pytest.mark.parametrize("mode,ops", [("int8", {"QuantizeLinear", "DequantizeLinear"}),
                                      ("dynamic", {"DynamicQuantizeLinear", "MatMulInteger"}), ("fp16", {"Cast"})])
def test_onnx_model_quantized_with_onnxruntime(tmp_path, prototypes_onnx, mode, ops):
    model, data = prototypes_onnx
    report = _quantized_build(tmp_path / "out", model, "onnxruntime", data=data, quantize=mode)
    q = _check_section(report, mode, "float32", eval_samples=100)
    assert q["method"].startswith("ONNX Runtime")
    bundled = onnx.load(str(tmp_path / "out" / "bundle" / "model.onnx"))
    assert ops <= {node.op_type for node in bundled.graph.node}
    if mode == "fp16":
        assert {t.data_type for t in bundled.graph.initializer if t.name.startswith("W")} == {onnx.TensorProto.FLOAT16}


def test_onnx_int8_integer_kernels_match_the_model_as_written(tmp_path):
    """Positive inputs times positive weights: ONNX Runtime's int8 kernels for x86 without VNNI saturate
    16-bit pair sums on full-range int8 weights (43 output LSB here); the 7-bit weights it gets must not."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from toolchain.convert.quantize import to_quantized_onnx
    from toolchain.model import load_model

    rng = np.random.default_rng(5)
    weights = [numpy_helper.from_array(rng.uniform(0, 1, (64, 32)).astype(np.float32), "W1"),
               numpy_helper.from_array(rng.normal(size=(32, CLASSES)).astype(np.float32), "W2")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["y"])], "positive",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CLASSES])], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "positive.onnx")
    x = rng.uniform(0, 1, (100, 1, 64)).astype(np.float32)
    quantized, _ = to_quantized_onnx(load_model(tmp_path / "positive.onnx"), tmp_path, "int8", x)
    outputs = {}
    levels = onnxruntime.GraphOptimizationLevel
    for level in (levels.ORT_ENABLE_ALL, levels.ORT_DISABLE_ALL):
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = level  # disabled: QDQ runs as written, in float between the nodes
        session = onnxruntime.InferenceSession(str(quantized.path), options, providers=["CPUExecutionProvider"])
        outputs[level] = np.concatenate([session.run(None, {"x": sample})[0] for sample in x])
    step = next(numpy_helper.to_array(t) for t in onnx.load(str(quantized.path)).graph.initializer
                if t.name == "y_scale")
    assert np.max(np.abs(np.subtract(*outputs.values()))) <= 1.001 * step


def test_calibration_from_npy_and_folder_and_eval_data(tmp_path, prototypes_onnx):
    model, data = prototypes_onnx
    arrays = np.load(data)
    folder = tmp_path / "calibration"
    folder.mkdir()
    np.save(folder / "a.npy", arrays["x_train"][:30])
    np.savez(folder / "b.npz", x=arrays["x_train"][30:50])
    np.savez(tmp_path / "eval.npz", x=arrays["x_test"][:40], y=np.eye(CLASSES)[arrays["y_test"][:40]])  # one-hot
    q = _quantized_build(tmp_path / "one", model, "onnxruntime", quantize="int8", calibration=folder / "a.npy",
                         eval_data=tmp_path / "eval.npz")["quantization"]
    assert q["calibration"] == {"source": "a.npy", "samples": 30}
    assert q["accuracy"]["data"] == "eval.npz (x)" and q["accuracy"]["samples"] == 40
    q = _quantized_build(tmp_path / "two", model, "onnxruntime", quantize="int8", calibration=folder)["quantization"]
    assert q["calibration"] == {"source": "calibration/ (2 files)", "samples": 50}
    # No --data and no --eval-data: nothing labelled, and the report says so instead of a figure.
    assert q["accuracy"] is None and "--eval-data" in q["accuracy_unavailable"]


def test_mode_and_io_are_part_of_the_cache_key(tmp_path, prototypes_onnx):
    model, data = prototypes_onnx
    options = dict(target="host", model=model, backend="onnxruntime", out=tmp_path / "out", data=data)
    assert not build(BuildOptions(**options, quantize="dynamic")).cached
    assert build(BuildOptions(**options, quantize="dynamic")).cached
    plain = build(BuildOptions(**options))
    assert not plain.cached and plain.report["quantization"] is None


def test_tvm_refuses_dynamic_range_and_names_litert(tmp_path, bars_keras, bars_data):
    with pytest.raises(BadInput, match=r"backend 'tvm' cannot import ops? .*dynamic-range quantized.*--backend litert"):
        build(BuildOptions(target="host", model=bars_keras, backend="tvm", data=bars_data, quantize="dynamic",
                           out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case,message", [
    ("shape", r"bad\.npz: samples of shape \[5\] do not fit input 'x' of shape \[1, 64\]"),
    ("empty_folder", r"empty: the calibration folder holds no \.npz or \.npy files"),
    ("keys", r"keys\.npz: has none of the arrays x_train, x, x_test to calibrate with"),
    ("nan", r"nan\.npy: the calibration samples hold NaN or infinite values"),
])
def test_unfit_calibration_is_bad_input(tmp_path, prototypes_onnx, case, message):
    paths = {"shape": tmp_path / "bad.npz", "empty_folder": tmp_path / "empty", "keys": tmp_path / "keys.npz",
             "nan": tmp_path / "nan.npy"}
    paths["empty_folder"].mkdir()
    np.savez(paths["shape"], x_train=np.zeros((4, 5), np.float32))
    np.savez(paths["keys"], images=np.zeros((4, 64), np.float32))
    np.save(paths["nan"], np.full((4, 64), np.nan, np.float32))
    with pytest.raises(BadInput, match=message) as error:
        build(BuildOptions(target="host", model=prototypes_onnx[0], backend="onnxruntime", quantize="int8",
                           calibration=paths[case], out=tmp_path / "out"))
    assert error.value.exit_code == EXIT_BAD_INPUT and not (tmp_path / "out").exists()


def test_bad_quantize_options_exit_2(tmp_path, tiny_tflite, prototypes_onnx):
    model, data = (str(p) for p in prototypes_onnx)
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, x_test=np.zeros((2, 64), np.float32))
    cases = [
        (["--model", model, "--quantize", "int4"], "--quantize takes none, fp16, dynamic, int8, int16x8, mixed, not 'int4'"),
        (["--model", model, "--quantize", "int8"], "--quantize int8 needs calibration data"),
        (["--model", model, "--quantize", "int8", "--calibration", str(tmp_path / "missing.npz")],
         "missing.npz: calibration data not found"),
        (["--model", model, "--quantize", "fp16", "--calibration", data],
         "--calibration applies only to --quantize int8"),
        (["--model", model, "--quantize-io", "float"], "--quantize-io applies only with --quantize"),
        (["--model", model, "--quantize", "int8", "--data", data, "--quantize-io", "int8"],
         "keeps float32 inputs and outputs (QDQ); use --quantize-io float"),
        (["--model", model, "--quantize", "dynamic", "--eval-data", str(unlabelled)],
         "unlabelled.npz: evaluation data needs inputs and their labels"),
        (["--model", str(tiny_tflite), "--quantize", "int8", "--data", data],
         "a .tflite model cannot be requantized; give the Keras or SavedModel model"),
    ]
    for argv, message in cases:
        backend = "litert" if argv[1] == str(tiny_tflite) else "onnxruntime"
        result = invoke("build", "--target", "host", "--backend", backend, "--out", str(tmp_path / "out"), *argv)
        assert result.returncode == 2 and message in result.stderr, (argv, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1  # one sentence, no traceback
    assert not (tmp_path / "out").exists()


def test_hls4ml_takes_no_quantize(tmp_path, bars_keras, bars_data):
    with pytest.raises(BadInput, match="backend 'hls4ml' compiles keras models only"):
        build(BuildOptions(target="alveo-u250", model=bars_keras, backend="hls4ml", data=bars_data, quantize="int8",
                           out=tmp_path / "out"))


def test_onnx_int8_on_tvm_is_held_to_one_step_of_the_dequantized_output(tmp_path, prototypes_onnx):
    """A QDQ model's float output lies on its DequantizeLinear grid: TVM may land one step off ORT
    (here it does, on a softmax quantized in steps of 1/255), which the float tolerance alone would fail."""
    model, data = prototypes_onnx
    report = _quantized_build(tmp_path / "out", model, "tvm", data=data, quantize="int8")
    (output,) = report["validation"]["outputs"]
    assert output["tolerance"] == pytest.approx(1 / 255 + 1e-4) and output["unit"] == "abs"  # a step + float rounding
    assert output["passed"] and output["max_abs_error"] <= output["tolerance"]
