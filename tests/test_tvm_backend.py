"""The tvm backend end to end: tiny models built here, compiled for host and rpi4, run per the bundle protocol.

Outputs are compared with the reference runtime (LiteRT / ONNX Runtime) on the same inputs; rpi4 bundles run
under qemu-user. Ingest, inputs, runners and the reference run are the toolchain's own; the host bundle is also
run by the independent protocol oracle (conftest.run_protocol).
"""

import dataclasses
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolchain import bundle, runners
from toolchain.hostenv import cross, tvm_runtimes
from toolchain.backends import get
from toolchain.backends.base import CompileRequest
from toolchain.errors import BuildError, MissingTool
from toolchain.model import ModelInfo, load_model
from toolchain.model.reference import reference_outputs
from toolchain.pipeline.validate import make_inputs
from toolchain.target.profile import load_target

from conftest import EM_AARCH64, EM_X86_64, elf_machine, full_int8_tflite, run_protocol

# TF warns when converting to int8 inputs without input statistics: expected, the test needs none.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")

SAMPLES = 3
IMAGE_SHAPE = (1, 8, 8, 3)


# ---------- models ----------


def _keras_conv_net():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input(IMAGE_SHAPE[1:], batch_size=1)
    x = tf.keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = tf.keras.layers.MaxPooling2D()(x)
    x = tf.keras.layers.Flatten()(x)
    outputs = tf.keras.layers.Dense(5, activation="softmax")(x)
    return tf.keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory) -> dict[str, ModelInfo]:
    """The same small conv net as fp32 and as full-integer int8 (int8 inputs and outputs)."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("tflite")
    keras_model = _keras_conv_net()
    (folder / "net_fp32.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_model).convert())

    rng = np.random.default_rng(0)
    full_int8_tflite(keras_model, lambda: ([rng.random(IMAGE_SHAPE, dtype=np.float32)] for _ in range(32)),
                     folder / "net_int8.tflite")
    return {name: load_model(folder / f"net_{name}.tflite") for name in ("fp32", "int8")}


def _onnx_model(path: Path, extra_node=None) -> ModelInfo:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm with a dynamic batch and two outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
    ]
    if extra_node is not None:
        nodes.append(extra_node)
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4, 8, 8]),
        ],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    info = load_model(path)
    assert [t.shape for t in info.inputs] == [(1, 3, 8, 8)]  # the dynamic batch pinned to 1
    return info


def _tflite_file(path: Path, convert) -> ModelInfo:
    path.write_bytes(convert())
    return load_model(path)


# ---------- building and running bundles ----------


def _compile(model: ModelInfo, target_name: str, bundle_dir: Path) -> dict:
    bundle_dir.mkdir(parents=True)
    request = CompileRequest(model=model, target=load_target(target_name), bundle_dir=bundle_dir, progress=print)
    return get("tvm").compile(request).manifest


def _inputs(model: ModelInfo, seed: int) -> list[np.ndarray]:
    return make_inputs(model, SAMPLES, seed=seed).tensors


def _run(bundle_dir: Path, inputs: list[np.ndarray], runner: str = "host", repeat: int = 0) -> list[np.ndarray]:
    """The bundle run by one of the toolchain's runners."""
    manifest = bundle.read_manifest(bundle_dir)
    result = runners.run_bundle(runners.get(runner), load_target(manifest["target"]), bundle_dir, manifest, inputs,
                                warmup=1 if repeat else 0, repeat=repeat)
    assert len(result.timings_ns) == repeat and all(t > 0 for t in result.timings_ns)
    return result.outputs


# ---------- tests ----------


@pytest.fixture(scope="module")
def fp32_host_bundle(tflite_models, tmp_path_factory) -> Path:
    bundle_dir = tmp_path_factory.mktemp("fp32_host") / "bundle"
    _compile(tflite_models["fp32"], "host", bundle_dir)
    return bundle_dir


def test_fp32_tflite_on_host_matches_litert(tflite_models, fp32_host_bundle, tmp_path):
    model = tflite_models["fp32"]
    manifest = bundle.read_manifest(fp32_host_bundle)
    assert manifest["backend"] == "tvm" and manifest["target"] == "host"
    assert manifest["entry"] == {"kind": "native", "argv": ["./runner"], "arch": "x86_64", "env": {}}
    assert elf_machine(fp32_host_bundle / "runner") == EM_X86_64
    listed = {f["path"] for f in manifest["files"]}
    assert {"runner", "model.so", "run.sh", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so"} <= listed

    inputs = _inputs(model, seed=2)
    (outputs,) = run_protocol(fp32_host_bundle, inputs, tmp_path, warmup=1, repeat=3)  # the protocol, to the letter
    (expected,) = reference_outputs(model, inputs)
    np.testing.assert_allclose(outputs, expected, atol=1e-4)
    (by_runner,) = _run(fp32_host_bundle, inputs, repeat=3)  # the toolchain's host runner agrees with the oracle
    np.testing.assert_array_equal(by_runner, outputs)


def test_bundle_is_self_contained_and_runs_through_run_sh(tflite_models, fp32_host_bundle, tmp_path):
    """Copied elsewhere, the bundle still finds model.so and lib/ (rpath $ORIGIN/lib), via run.sh too."""
    moved = tmp_path / "copied bundle"
    shutil.copytree(fp32_host_bundle, moved)
    inputs = _inputs(tflite_models["fp32"], seed=3)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    (outputs,) = run_protocol(moved, inputs, tmp_path / "io", argv=[str(moved / "run.sh")], env=env, cwd=tmp_path)
    (expected,) = reference_outputs(tflite_models["fp32"], inputs)
    np.testing.assert_allclose(outputs, expected, atol=1e-4)


def test_runner_reports_bad_input_on_stderr(fp32_host_bundle, tmp_path):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    (in_dir / "input0.bin").write_bytes(b"\0" * 10)
    result = subprocess.run(["./runner", str(in_dir), str(tmp_path), "1", "0", "0"], cwd=fp32_host_bundle, capture_output=True, text=True)
    assert result.returncode != 0
    assert "input0.bin holds 10 bytes; expected 768" in result.stderr


def test_fp32_tflite_on_rpi4_under_qemu_matches_host(tflite_models, fp32_host_bundle, aarch64_runtime, tmp_path):
    model = tflite_models["fp32"]
    bundle_dir = tmp_path / "bundle"
    manifest = _compile(model, "rpi4", bundle_dir)
    assert manifest["entry"]["arch"] == "aarch64"
    for binary in ("runner", "model.so", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so"):
        assert elf_machine(bundle_dir / binary) == EM_AARCH64, binary

    inputs = _inputs(model, seed=4)
    (on_rpi4,) = _run(bundle_dir, inputs, "qemu-user", repeat=2)
    (on_host,) = _run(fp32_host_bundle, inputs)
    (expected,) = reference_outputs(model, inputs)
    np.testing.assert_allclose(on_rpi4, on_host, atol=1e-5)
    np.testing.assert_allclose(on_rpi4, expected, atol=1e-4)


# rpi4 is slow and repeats host's check under qemu, which test_fp32_tflite_on_rpi4_under_qemu_matches_host makes.
@pytest.mark.parametrize("target_name", ["host", pytest.param("rpi4", marks=pytest.mark.slow)])
def test_int8_tflite_matches_litert(tflite_models, target_name, tmp_path, request):
    if target_name == "rpi4":
        request.getfixturevalue("aarch64_runtime")
    model = tflite_models["int8"]
    assert model.inputs[0].dtype == "int8" and model.outputs[0].dtype == "int8"
    bundle_dir = tmp_path / "bundle"
    _compile(model, target_name, bundle_dir)
    inputs = _inputs(model, seed=5)
    (outputs,) = _run(bundle_dir, inputs, "host" if target_name == "host" else "qemu-user")
    (expected,) = reference_outputs(model, inputs)
    assert outputs.dtype == np.int8
    # TVM imports int8 as dequantize -> float -> quantize: rounding may differ by one step.
    assert np.abs(outputs.astype(np.int32) - expected.astype(np.int32)).max() <= 1


def test_onnx_with_two_outputs_on_host_matches_onnxruntime(tmp_path):
    model = _onnx_model(tmp_path / "tiny.onnx")
    assert [(t.name, t.shape) for t in model.outputs] == [("logits", (1, 5)), ("features", (1, 4, 8, 8))]
    assert get("tvm").unsupported_ops(model) == []
    bundle_dir = tmp_path / "bundle"
    _compile(model, "host", bundle_dir)
    inputs = _inputs(model, seed=6)
    outputs = _run(bundle_dir, inputs)
    expected = reference_outputs(model, inputs)  # ONNX Runtime's
    assert len(outputs) == len(expected) == 2
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_unsupported_tflite_ops_are_named(tflite_models, tmp_path):
    import tensorflow as tf
    from tensorflow.compiler.tf2xla.python import xla  # the only TF route to the DYNAMIC_UPDATE_SLICE builtin

    class UpdateSlice(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((4, 4), tf.float32), tf.TensorSpec((2, 2), tf.float32)])
        def __call__(self, x, update):
            return xla.dynamic_update_slice(x, update, tf.constant([1, 1]))

    def dynamic_range_dense():
        inputs = tf.keras.Input((64,), batch_size=1)
        converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inputs, tf.keras.layers.Dense(32)(inputs)))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: weights-only int8
        return converter.convert()

    backend = get("tvm")
    update_slice = UpdateSlice()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([update_slice.__call__.get_concrete_function()], update_slice)
    update_model = _tflite_file(tmp_path / "update.tflite", converter.convert)
    assert backend.unsupported_ops(update_model) == ["DYNAMIC_UPDATE_SLICE"]
    hybrid_model = _tflite_file(tmp_path / "hybrid.tflite", dynamic_range_dense)
    assert backend.unsupported_ops(hybrid_model) == ["FULLY_CONNECTED (dynamic-range quantized)"]
    assert backend.unsupported_ops(tflite_models["fp32"]) == []
    assert backend.unsupported_ops(tflite_models["int8"]) == []

    with pytest.raises(BuildError, match="backend tvm cannot import update.tflite: .*DYNAMIC_UPDATE_SLICE"):
        _compile(update_model, "host", tmp_path / "bundle")


def test_unsupported_onnx_ops_are_named(tmp_path):
    from onnx import helper

    model = _onnx_model(tmp_path / "celu.onnx", extra_node=helper.make_node("Celu", ["logits"], ["unused"]))
    assert get("tvm").unsupported_ops(model) == ["Celu"]


@pytest.mark.fast
def test_missing_cross_compiler_says_how_to_install():
    target = dataclasses.replace(load_target("rpi4"), cross_prefix="riscv64-unknown-linux-gnu-")
    with pytest.raises(MissingTool) as caught:
        cross.find_tool(target, "g++")
    assert caught.value.exit_code == 3
    assert str(caught.value) == (
        "riscv64-unknown-linux-gnu-g++ is not installed; install it with: "
        "apt-get install g++-riscv64-unknown-linux-gnu, or run ./bootstrap.sh."
    )


def test_compiler_failure_quotes_its_stderr(tmp_path):
    (tmp_path / "broken.cpp").write_text("int main() { return missing_symbol; }\n")
    gxx = cross.find_tool(load_target("host"), "g++")
    with pytest.raises(BuildError, match="g\\+\\+ failed with exit status 1:(.|\n)*missing_symbol"):
        cross.run_tool([gxx, "-c", "broken.cpp"], cwd=tmp_path)


@pytest.mark.fast
def test_absent_target_runtime_asks_for_bootstrap(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEYARD_CACHE", str(tmp_path))
    with pytest.raises(MissingTool, match=r"run \./bootstrap\.sh\.$"):
        tvm_runtimes.tvm_runtime_dir("aarch64")
    host_dir = tvm_runtimes.tvm_runtime_dir(platform.machine())  # the installed packages': always there
    assert {p.name for p in host_dir.iterdir()} >= {"libtvm_runtime.so", "libtvm_ffi.so"}


@pytest.mark.fast
def test_versions_are_cheap_and_complete():
    import importlib.metadata

    versions = get("tvm").versions()
    assert versions["apache-tvm"] == importlib.metadata.version("apache-tvm")
    assert versions["apache-tvm-ffi"] == importlib.metadata.version("apache-tvm-ffi")
    assert versions["g++"].startswith("g++ ")
    # Neither importing the backend nor asking its versions may import tvm (over a second).
    probe = "import sys, toolchain.backends.tvm as b; b.TvmBackend().versions(); sys.exit('tvm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).parent.parent).returncode == 0


def test_fully_connected_on_a_rank4_input_keeps_the_models_output_shape(tmp_path):
    """Pooling to 1x1 then Flatten: the converter feeds FULLY_CONNECTED the rank-4 tensor (as in ResNet-8)."""
    import tensorflow as tf

    def pooled_dense():
        tf.keras.utils.set_random_seed(3)
        inputs = tf.keras.Input((4, 4, 3), batch_size=1)
        x = tf.keras.layers.Conv2D(8, 1, activation="relu")(inputs)
        x = tf.keras.layers.AveragePooling2D(4)(x)
        outputs = tf.keras.layers.Dense(5)(tf.keras.layers.Flatten()(x))
        return tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inputs, outputs)).convert()

    model = _tflite_file(tmp_path / "pooled_dense.tflite", pooled_dense)
    assert model.outputs[0].shape == (1, 5)
    _compile(model, "host", tmp_path / "bundle")
    inputs = _inputs(model, seed=1)
    outputs = _run(tmp_path / "bundle", inputs)
    assert outputs[0].shape[1:] == (1, 5)  # samples x the output shape
    np.testing.assert_allclose(outputs[0], reference_outputs(model, inputs)[0], rtol=1e-5, atol=1e-5)
