"""The kernels backend end to end: small int8 models built here, compiled into static calls of
edgeyard's own kernels, run on the emulated boards and compared with TFLite Micro's interpreter at
0 LSB (the backend's reference; validation says which one it used).

Each model groups several operators so that the default tier stays short: every operator the
backend lowers appears in at least one of them (the test asserts which), with the odd shapes the
kernels special-case (channels not a multiple of four, odd widths, stride 2, SAME and VALID
padding, dilation, depth multiplier 2, per-channel and per-tensor weights, fused RELU and RELU6,
broadcast ADD and MUL). The MLPerf Tiny figures come from `invoke bench-mcu`, not from here.
"""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from toolchain import runners
from toolchain.backends.kernels.graph import read_graph
from toolchain.backends.kernels.lower import LOWERINGS, slice_bounds
from toolchain.errors import BadInput, BuildError
from toolchain.pipeline.build import BuildOptions, build
from toolchain.target.profile import load_target

from conftest import full_int8_tflite

pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")

BOARD = "nucleo-l4r5zi"
QUANTIZE, TANH = 114, 28  # BuiltinOperator
ALIASES = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}  # no code: the planner gives input and output one storage
# The portable C path: a Cortex-M3 has no DSP extension (no SXTB16/SMLAD), and qemu-system-arm's
# mps2-an385 is a Cortex-M3 board with the same memory map as the M4's mps2-an386.
CORTEX_M3 = {"cpu": "cortex-m3", "firmware.cflags": ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"],
             "emulator.command": ["qemu-system-arm", "-machine", "mps2-an385", "-cpu", "cortex-m3"]}


def _dataset(shape: tuple[int, ...], low: float = -1.0, high: float = 1.0, samples: int = 32):
    rng = np.random.default_rng(0)
    return lambda: ([rng.uniform(low, high, shape).astype(np.float32)] for _ in range(samples))


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory) -> Path:
    """Convolutions, pooling and elementwise ops on odd shapes, weights per channel."""
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((13, 15, 5), batch_size=1)  # 5 channels, odd width
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(inputs)  # (7, 8, 6)
    d = layers.DepthwiseConv2D(3, depth_multiplier=2, dilation_rate=2, padding="same", activation="relu6")(x)
    d = layers.Conv2D(6, 1)(d)  # 1x1, as GEMM
    r = layers.Add()([x, d])  # same shapes
    g = layers.GlobalAveragePooling2D(keepdims=True)(r)  # MEAN, (1, 1, 6)
    r = layers.Lambda(lambda t: t[0] * t[1])([r, layers.Activation("sigmoid")(g)])  # broadcast MUL
    r = layers.Lambda(lambda t: t[0] + t[1])([r, g])  # broadcast ADD
    c = layers.Conv2D(7, 3, dilation_rate=2, activation="relu")(r)  # VALID, dilated: (3, 4, 7)
    c = layers.AveragePooling2D(2, strides=1)(c)  # (2, 3, 7)
    c = layers.MaxPooling2D(2, padding="same")(c)  # (1, 2, 7)
    c = layers.Dense(9, activation="relu")(layers.Flatten()(c))
    outputs = layers.Dense(4, activation="softmax")(c)
    return full_int8_tflite(tf.keras.Model(inputs, outputs), _dataset((1, 13, 15, 5)),
                            tmp_path_factory.mktemp("conv") / "conv.tflite")


@pytest.fixture(scope="module")
def movement_model(tmp_path_factory) -> Path:
    """Data movement, MEAN and the table functions, weights per tensor."""
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(1)
    inputs = tf.keras.Input((5, 7, 3), batch_size=1)
    a = layers.ZeroPadding2D(((1, 1), (1, 0)))(inputs)  # PAD, (7, 8, 3)
    a = layers.Conv2D(6, 3, strides=2, activation="relu")(a)  # (3, 3, 6)
    b = layers.Permute((2, 1, 3))(layers.Conv2D(6, 1)(inputs))  # TRANSPOSE, (7, 5, 6)
    b = layers.Lambda(lambda t: t[:, 1:6:2, 0:5:2, :])(b)  # STRIDED_SLICE, (3, 3, 6)
    c = layers.Concatenate()([a, b])  # (3, 3, 12)
    c = layers.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 0], [0, 1], [0, 0]], constant_values=0.5))(c)  # PADV2
    c = layers.Activation("hard_silu")(layers.DepthwiseConv2D(3)(c))  # HARD_SWISH, (2, 2, 12)
    outputs = layers.Dense(5, activation="sigmoid")(layers.GlobalAveragePooling2D()(c))  # MEAN, LOGISTIC
    return full_int8_tflite(tf.keras.Model(inputs, outputs), _dataset((1, 5, 7, 3)),
                            tmp_path_factory.mktemp("movement") / "movement.tflite", per_channel=False)


@pytest.fixture(scope="module")
def tables_model(tmp_path_factory) -> Path:
    """HARD_SWISH, LOGISTIC and an int8 -> int8 QUANTIZE straight on the input: 32 random samples of 256
    values reach every entry of their tables. The converter emits such a QUANTIZE between mismatched
    quantizations, which a Keras model cannot ask for, so a TANH (output scale 1/128, zero point 0) is
    turned into one."""
    import tensorflow as tf
    from tensorflow.lite.tools import flatbuffer_utils

    layers = tf.keras.layers
    inputs = tf.keras.Input((256,), batch_size=1)
    outputs = [layers.Activation(name)(inputs) for name in ("hard_silu", "sigmoid", "tanh")]
    folder = tmp_path_factory.mktemp("tables")
    converted = full_int8_tflite(tf.keras.Model(inputs, outputs), _dataset((1, 256), -6.0, 4.0),
                                 folder / "converted.tflite")
    model = flatbuffer_utils.read_model(str(converted))
    for code in model.operatorCodes:
        if code.builtinCode == TANH:
            code.builtinCode = code.deprecatedBuiltinCode = QUANTIZE
    flatbuffer_utils.write_model(model, str(folder / "tables.tflite"))
    return folder / "tables.tflite"


@pytest.fixture(scope="module")
def float_io_model(tmp_path_factory) -> Path:
    """Float inputs and outputs: QUANTIZE from float32 in front, DEQUANTIZE behind."""
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(2)
    inputs = tf.keras.Input((6, 6, 2), batch_size=1)
    x = layers.MaxPooling2D(2)(layers.Conv2D(4, 3, activation="relu6")(inputs))
    outputs = layers.Dense(3)(layers.Flatten()(x))
    return full_int8_tflite(tf.keras.Model(inputs, outputs), _dataset((1, 6, 6, 2)),
                            tmp_path_factory.mktemp("float") / "float_io.tflite", float_io=True)


# What each model must contain, so that a converter change cannot silently drop an op from the tests.
MODEL_OPS = {
    "conv_model": {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "MEAN", "LOGISTIC", "AVERAGE_POOL_2D",
                   "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE"},
    "movement_model": {"PAD", "PADV2", "TRANSPOSE", "STRIDED_SLICE", "CONCATENATION", "DEPTHWISE_CONV_2D",
                       "HARD_SWISH", "MEAN", "FULLY_CONNECTED", "LOGISTIC"},
    "tables_model": {"HARD_SWISH", "LOGISTIC", "QUANTIZE"},
    "float_io_model": {"QUANTIZE", "DEQUANTIZE", "CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"},
}


def _kernels_build(model: Path, out: Path, target: str = BOARD, settings: dict | None = None) -> dict:
    built = build(BuildOptions(target=target, model=model, backend="kernels", out=out, settings=settings or {}))
    report = json.loads((built.out_dir / "report.json").read_text())
    validation = report["validation"]
    assert report["backend"] == "kernels" and validation["passed"] is True and validation["samples"] == 32
    assert validation["reference"] == "tflite-micro" and validation["max_abs_error"] == 0
    assert all(output["max_abs_error"] == 0 for output in validation["outputs"])
    return report


@pytest.fixture(scope="module")
def conv_build(conv_model, tmp_path_factory) -> dict:
    return _kernels_build(conv_model, tmp_path_factory.mktemp("conv_build") / "out")


@pytest.mark.parametrize("fixture", sorted(MODEL_OPS))
def test_every_op_is_bit_exact_with_tflite_micro(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    ops = {operator.op for operator in read_graph(model).operators}
    assert MODEL_OPS[fixture] <= ops, f"the converter no longer emits {MODEL_OPS[fixture] - ops}"
    if fixture == "conv_model":
        request.getfixturevalue("conv_build")  # built once, shared with the profile tests
    else:
        _kernels_build(model, tmp_path / "out")


def test_the_tests_cover_every_lowered_op():
    """Every op the backend lowers is in a test model, except the aliases the converter always writes
    as RESHAPE (they share RESHAPE's lowering)."""
    covered = set().union(*MODEL_OPS.values())
    assert set(LOWERINGS) - covered == {"SQUEEZE", "EXPAND_DIMS"}
    assert LOWERINGS["SQUEEZE"] is LOWERINGS["EXPAND_DIMS"] is LOWERINGS["RESHAPE"]


# ---------- the per-layer profile, the report, repeatability ----------


def test_profile_has_one_entry_per_layer_summing_to_the_inference(conv_build, conv_model):
    operators = read_graph(conv_model).operators
    profile = conv_build["profile"]
    calls = [o for o in operators if o.op not in ALIASES]
    assert [entry["op"] for entry in profile] == [o.op for o in calls]
    assert [entry["operator"] for entry in profile] == [o.index for o in calls]
    assert all(entry["instructions"] > 0 for entry in profile)
    assert all(entry["macs"] > 0 for entry in profile if entry["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D"))
    whole = conv_build["bench"]["instructions_per_inference"]
    assert abs(sum(entry["instructions"] for entry in profile) - whole) <= 0.05 * whole
    assert 0 < conv_build["memory"]["arena_bytes"] < conv_build["memory"]["ram_bytes"]
    report_md = (Path(conv_build["out_dir"]) / "report.md").read_text()
    costliest = max(profile, key=lambda entry: entry["instructions"])
    assert "## Per layer" in report_md and "| layer | op | output tensor | instructions |" in report_md
    assert f"| {costliest['op']} |" in report_md


def test_two_runs_count_the_same_instructions(conv_build):
    bundle = Path(conv_build["out_dir"]) / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    x = np.random.default_rng(3).integers(-128, 128, (1, *manifest["inputs"][0]["shape"])).astype(np.int8)
    counts = [runners.run_bundle(runners.get("qemu-system"), load_target(BOARD), bundle, manifest, [x],
                                 count_instructions=True).count.instructions_per_inference for _ in range(2)]
    assert counts[0] == counts[1] > 1000


# ---------- other cores ----------


def _disassembly(report: dict) -> str:
    image = Path(report["out_dir"]) / "bundle" / "firmware-qemu.elf"
    return subprocess.run(["arm-none-eabi-objdump", "-d", str(image)], capture_output=True, text=True,
                          check=True).stdout


def test_portable_path_on_a_cortex_m3(movement_model, conv_build, tmp_path):
    """Without the DSP extension the kernels take their portable C path: no SMLAD in the image (an M3 would
    fault on one), and still 0 LSB."""
    report = _kernels_build(movement_model, tmp_path / "out", settings=CORTEX_M3)
    assert "smlad" not in _disassembly(report)
    assert "smlad" in _disassembly(conv_build)  # the M4 build uses it: the check can fail


@pytest.mark.slow
@pytest.mark.parametrize("target", ["stm32f746g-disco", "corstone-300"])
def test_cortex_m7_and_m55_boards(conv_model, tmp_path, target):
    report = _kernels_build(conv_model, tmp_path / "out", target)
    assert report["target"] == target and len(report["profile"]) > 0


# ---------- what the kernels do not compute ----------


@pytest.fixture(scope="module")
def tanh_model(tmp_path_factory) -> Path:
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(3)
    inputs = tf.keras.Input((4, 4, 3), batch_size=1)
    outputs = layers.Activation("tanh")(layers.Conv2D(4, 3)(inputs))
    return full_int8_tflite(tf.keras.Model(inputs, outputs), _dataset((1, 4, 4, 3)),
                            tmp_path_factory.mktemp("tanh") / "tanh.tflite")


def test_an_unsupported_op_is_named_with_its_operator(tanh_model, tmp_path):
    with pytest.raises(BadInput, match=r"tanh.tflite: backend 'kernels' cannot import op TANH \(operator 1\); "
                                       r"try --backend tvm\.") as err:
        build(BuildOptions(target=BOARD, model=tanh_model, backend="kernels", out=tmp_path / "out"))
    assert err.value.exit_code == 2 and not (tmp_path / "out").exists()


def test_auto_falls_back_to_tvm_and_records_the_attempt(tanh_model, tmp_path):
    built = build(BuildOptions(target=BOARD, model=tanh_model, out=tmp_path / "out"))  # the default: auto
    report = json.loads((built.out_dir / "report.json").read_text())
    assert report["backend"] == "tvm" and report["validation"]["passed"] is True
    kernels, tvm = report["selection"]["candidates"]
    assert kernels["backend"] == "kernels" and not kernels["validated"] and "TANH (operator 1)" in kernels["error"]
    assert tvm["backend"] == "tvm" and tvm["validated"] and tvm["error"] is None


def test_a_model_too_big_for_the_board_names_the_largest_consumers(tmp_path):
    """Activations over the board's 640 KB of RAM: the input buffer and the arena are named."""
    import tensorflow as tf

    inputs = tf.keras.Input((160, 160, 16), batch_size=1)  # 409,600 bytes of int8 input
    hidden = tf.keras.layers.Conv2D(16, 1)(inputs)  # as much again in the arena
    outputs = tf.keras.layers.Conv2D(4, 1)(hidden)
    model = full_int8_tflite(tf.keras.Model(inputs, outputs), _dataset((1, 160, 160, 16), samples=4),
                             tmp_path / "big.tflite")
    with pytest.raises(BuildError, match=r"big.tflite does not fit nucleo-l4r5zi: the firmware needs [\d,]+ bytes "
                                         r"of RAM \(655,360 available\); the biggest consumers are .*arena "
                                         r"\([\d,]+ bytes, .bss\)") as err:
        build(BuildOptions(target=BOARD, model=model, backend="kernels", out=tmp_path / "out"))
    assert err.value.exit_code == 1 and not (tmp_path / "out").exists()


# ---------- build-time arithmetic ----------


@pytest.mark.fast
def test_strided_slice_bounds_follow_python_slicing():
    """TFLite's StartForAxis/StopForAxis clamp as Python's slices do; a shrunk axis keeps one element."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        size, stride = int(rng.integers(1, 9)), int(rng.choice([-3, -2, -1, 1, 2, 3]))
        begin, end = (int(v) for v in rng.integers(-12, 12, 2))
        masked_begin, masked_end = (bool(v) for v in rng.integers(0, 2, 2))
        start, stop = slice_bounds(size, begin, end, stride, masked_begin, masked_end, False)
        want = list(range(size))[slice(None if masked_begin else begin, None if masked_end else end, stride)]
        assert list(range(start, stop, stride)) == want, (size, begin, end, stride, masked_begin, masked_end)
    assert slice_bounds(5, -2, 0, 1, False, False, True) == (3, 4)
