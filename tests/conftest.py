"""Shared fixtures: small models the tests build themselves (a user's clone has no shared/ folder)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_keras(tmp_path_factory) -> Path:
    """A seeded 8x8x1 -> 3-class CNN, saved as .keras (untrained: the tests compare runtimes, not accuracy)."""
    import keras

    keras.utils.set_random_seed(7)
    model = keras.Sequential([
        keras.Input((8, 8, 1), batch_size=1, name="image"),  # a fixed batch, as to_tflite pins it
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    path = tmp_path_factory.mktemp("keras") / "tiny_cnn.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_tflite(tiny_keras, tmp_path_factory) -> Path:
    import keras
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(tiny_keras))
    path = tmp_path_factory.mktemp("tflite") / "tiny_cnn.tflite"
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="session")
def hybrid_tflite(tmp_path_factory) -> Path:
    """Dynamic-range (hybrid) quantized dense layer: int8 weights, float activations. LiteRT runs it;
    TVM's Relax frontend cannot import it (like the MLPerf Tiny kws_ref_model_float32.tflite)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(5)
    inputs = keras.Input((64,), batch_size=1)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, keras.layers.Dense(32)(inputs)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: weights-only int8
    path = tmp_path_factory.mktemp("hybrid") / "hybrid_dense.tflite"
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """x[N,16] -> relu(x W + b) -> softmax over 4 classes, with a symbolic batch dimension."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weights = numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["h"]),
         helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Softmax", ["r"], ["y"], axis=-1)],
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("onnx") / "tiny_mlp.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def aarch64_runtime():
    """The aarch64 TVM runtime libraries bootstrap.sh fetches; skip when they cannot be had."""
    from toolchain.hostenv import tvm_runtimes
    from toolchain.errors import BuildError

    try:
        tvm_runtimes.fetch("aarch64", progress=print)
    except BuildError as err:  # no network and nothing cached: bootstrap.sh was not run
        pytest.skip(f"no aarch64 TVM runtime: {err}")


def full_int8_tflite(keras_model, representative_dataset, path: Path) -> Path:
    """Full-integer int8 TFLite (int8 inputs and outputs) calibrated on `representative_dataset`."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


HEAVY_MODULES = ("tensorflow", "keras", "tvm", "ai_edge_litert", "onnxruntime", "onnx", "onnxslim")


def cached_build_in_fresh_python(model: Path, backend: str, out: Path, samples: int = 32) -> tuple[bool, str, list]:
    """build() in a new interpreter: (cached, the backend used, the heavy libraries it imported)."""
    probe = (f"import json, sys; from pathlib import Path; from toolchain.build import BuildOptions, build; "
             f"r = build(BuildOptions(target='host', model=Path({str(model)!r}), backend={backend!r}, "
             f"out=Path({str(out)!r}), samples={samples})); "
             f"print(json.dumps([r.cached, r.report['backend'], [m for m in {HEAVY_MODULES!r} if m in sys.modules]]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    cached, used, heavy = json.loads(result.stdout.splitlines()[-1])
    return cached, used, heavy


def invoke(*args: str, cwd: Path = PROJECT_ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI (`invoke ...`) as a user would; argv list, no shell."""
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
