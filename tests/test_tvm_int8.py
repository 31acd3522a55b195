"""int8 TFLite through the tvm backend: LiteRT's integer arithmetic, not the frontend's float approximation.

The first model holds the pattern that took MLPerf Tiny's int8 ResNet-8 84 LSB off LiteRT: a residual ADD
of two branches with different scales, an average pool (SAME padding: partial windows at the
edges), a dense layer and a softmax, whose logits amplify any LSB the pool gets wrong. The second
checks the int8 operands of convolutions where the input zero point's fold into the bias meets padding.
"""

from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import BuildError
from toolchain.model import load_model
from toolchain.model.reference import reference_outputs
from toolchain.pipeline.build import BuildOptions, build
from toolchain.target.profile import load_target

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


@pytest.fixture(scope="module")
def padded_int8(tmp_path_factory) -> Path:
    """Convolutions whose inputs have zero point -128 (calibrated on [0, 1), then after ReLUs) with SAME padding:
    symmetric (3x3, stride 1), asymmetric (stride 2 over an odd and an even side), a depthwise one with a
    channel multiplier, and a dense layer; no softmax, so every LSB of the convolutions reaches the output."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(3)
    layers = tf.keras.layers
    inputs = tf.keras.Input((9, 10, 3), batch_size=1)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same")(x)
    outputs = layers.Dense(10)(layers.Flatten()(x))

    rng = np.random.default_rng(3)
    calibration = lambda: ([rng.uniform(0, 1, (1, 9, 10, 3)).astype(np.float32)] for _ in range(64))  # noqa: E731
    return full_int8_tflite(tf.keras.Model(inputs, outputs), calibration,
                            tmp_path_factory.mktemp("int8") / "padded_int8.tflite")


def test_int8_operands_match_litert_bit_for_bit(padded_int8):
    """Convolutions and the dense layer multiply the int8 tensors themselves (int32 accumulators), padded
    explicitly with the input zero point, and every output equals LiteRT's, borders included."""
    import tvm
    from tvm import relax

    from toolchain.backends.tvm.frontend import imported_module, tvm_target_of

    info = load_model(padded_int8)
    ir_module = imported_module(info, lambda _: None)
    calls = [binding.value for block in ir_module["main"].body.blocks for binding in block.bindings
             if isinstance(binding.value, relax.Call) and isinstance(binding.value.op, tvm.ir.Op)]
    products = [call for call in calls if call.op.name in ("relax.nn.conv2d", "relax.matmul")]
    assert len(products) == 4
    for call in products:
        assert [a.ty.dtype for a in call.args] == ["int8", "int8"] and call.attrs.out_dtype == "int32", call
    pads = [call for call in calls if call.op.name == "relax.nn.pad"]
    assert [int(p.attrs.pad_value) for p in pads] == [-128, -128, -128]
    assert [int(w) for w in pads[2].attrs.pad_width] == [0, 0, 1, 1, 0, 1, 0, 0]  # stride 2: asymmetric on W

    tvm_target = tvm_target_of(load_target("host"))
    executable = tvm.compile(ir_module, target=tvm_target, relax_pipeline=relax.get_default_pipeline(tvm_target))
    main = relax.VirtualMachine(executable, tvm.cpu())["main"]
    samples = np.random.default_rng(0).integers(-128, 128, (64, *info.inputs[0].shape), dtype=np.int8)
    outputs = np.stack([main(tvm.runtime.tensor(sample)).numpy() for sample in samples])
    np.testing.assert_array_equal(outputs, reference_outputs(info, [samples], "litert")[0])
