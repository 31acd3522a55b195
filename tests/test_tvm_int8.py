"""int8 TFLite through the tvm backend: LiteRT's integer arithmetic, not the frontend's float approximation.

The model holds the pattern that took MLPerf Tiny's int8 ResNet-8 84 LSB off LiteRT: a residual ADD
of two branches with different scales, an average pool (SAME padding: partial windows at the
edges), a dense layer and a softmax, whose logits amplify any LSB the pool gets wrong.
"""

from pathlib import Path

import numpy as np
import pytest

from toolchain.pipeline.build import BuildOptions, build
from toolchain.errors import BuildError

from conftest import full_int8_tflite

# TF warns when converting to int8 inputs without input statistics: expected, the test needs none.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")


@pytest.fixture(scope="module")
def residual_int8(tmp_path_factory) -> Path:
    """A seeded residual CNN, full-integer quantized (int8 weights, activations, inputs and outputs)."""
    import tensorflow as tf

    # With this seed the stock frontend is 8 LSB off LiteRT (3 to 8 over seeds 0-5): a clear margin.
    tf.keras.utils.set_random_seed(5)
    layers = tf.keras.layers
    inputs = tf.keras.Input((8, 8, 3), batch_size=1)
    branch = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    branch = layers.DepthwiseConv2D(3, padding="same", activation="relu")(branch)
    shortcut = layers.Conv2D(16, 1)(inputs)
    x = layers.ReLU()(layers.Add()([branch, shortcut]))
    x = layers.AveragePooling2D(3, strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    # Large dense weights spread the logits, so the softmax turns a pooled LSB into several.
    outputs = layers.Dense(10, activation="softmax", kernel_initializer=tf.keras.initializers.RandomNormal(stddev=0.5))(x)

    rng = np.random.default_rng(5)
    calibration = lambda: ([rng.uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)] for _ in range(64))  # noqa: E731
    return full_int8_tflite(tf.keras.Model(inputs, outputs), calibration,
                            tmp_path_factory.mktemp("int8") / "residual_int8.tflite")


def test_tvm_int8_matches_litert(residual_int8, tmp_path):
    validation = build(BuildOptions(target="host", model=residual_int8, backend="tvm", out=tmp_path)).report["validation"]
    assert validation["passed"] and validation["max_abs_error"] <= 1, validation


@pytest.mark.slow  # checks the test above, not the toolchain
def test_stock_frontend_misses_litert_on_the_same_model(residual_int8, tmp_path, monkeypatch):
    """Without the integer converter (the frontend's own float arithmetic) validation fails: the test has teeth."""
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    from toolchain.backends.tvm import int8_import

    monkeypatch.setattr(int8_import, "Int8OperatorConverter", OperatorConverter)
    with pytest.raises(BuildError, match=r"is off by \d+ LSB"):
        build(BuildOptions(target="host", model=residual_int8, backend="tvm", out=tmp_path))
