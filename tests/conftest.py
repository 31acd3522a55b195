"""Shared fixtures: small models the tests build themselves (a user's clone has no shared/ folder), and the
helpers several test files use: the bundle-protocol oracle, ELF headers, free ports, the CLI.

Nothing heavy is imported here at module level: `invoke test --fast` (pytest -m fast) must not load
TensorFlow, TVM or ONNX Runtime; fixtures import them when a test asks for them.
"""

import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolchain.console import quiet_frameworks

quiet_frameworks()  # as the command line does (tasks.py)

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
def sensitive_model(tmp_path_factory):
    """(a .keras classifier with one deliberately sensitive layer, calibration .npy, labelled eval .npz): for
    --quantize mixed (test_mixed_precision.py) and --precision auto (test_hls4ml.py).

    The middle layer's output has a wide range: one unit swings by thousands while the eight that carry the class
    stay below one, so int8's one scale for the tensor rounds them all to the same step. The labels are the float
    model's own top-1, so its accuracy is 100% and any drop is quantization's."""
    import keras

    keras.utils.set_random_seed(11)
    rng = np.random.default_rng(11)
    model = keras.Sequential([
        keras.Input((16,), batch_size=1, name="features"),
        keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(9, name="wide_range"),
        keras.layers.Dense(4, name="logits"),
    ])
    wide, _ = model.get_layer("wide_range").get_weights()
    wide[:, 8] = 400.0 * rng.choice([-1.0, 1.0], size=32)  # the wide unit
    model.get_layer("wide_range").set_weights([wide, np.zeros(9, np.float32)])
    head, bias = model.get_layer("logits").get_weights()
    head[8, :] = 0.0  # the class does not depend on the wide unit
    model.get_layer("logits").set_weights([head, bias])
    folder = tmp_path_factory.mktemp("mixed")
    path = folder / "sensitive.keras"
    model.save(path)
    x = rng.normal(size=(600, 1, 16)).astype(np.float32)
    labels = model.predict(x.reshape(600, 16), verbose=0).argmax(axis=1)
    np.save(folder / "calibration.npy", x[:200])
    np.savez(folder / "eval.npz", x=x[200:], y=labels[200:])
    return path, folder / "calibration.npy", folder / "eval.npz"


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


@pytest.fixture(scope="module")
def signed_builds(tmp_path_factory) -> Path:
    """Builds made while a module runs are signed by a key its deploys and flashes trust: the key's path is
    $EDGEYARD_SIGNING_KEY until the module ends (deploy and flash refuse unsigned builds)."""
    from toolchain import signing

    key, _ = signing.keygen(tmp_path_factory.mktemp("signing") / "key.pem")
    previous = os.environ.get(signing.KEY_ENV)
    os.environ[signing.KEY_ENV] = str(key)
    yield key
    if previous is None:
        os.environ.pop(signing.KEY_ENV)
    else:
        os.environ[signing.KEY_ENV] = previous


@pytest.fixture(scope="session")
def aarch64_runtime():
    """The aarch64 TVM runtime libraries bootstrap.sh fetches; skip when they cannot be had."""
    from toolchain.hostenv import tvm_runtimes
    from toolchain.errors import BuildError

    try:
        tvm_runtimes.fetch("aarch64", progress=print)
    except BuildError as err:  # no network and nothing cached: bootstrap.sh was not run
        pytest.skip(f"no aarch64 TVM runtime: {err}")


def full_int8_tflite(keras_model, representative_dataset, path: Path, per_channel: bool = True,
                     float_io: bool = False) -> Path:
    """Full-integer int8 TFLite calibrated on `representative_dataset`: int8 inputs and outputs (float ones,
    with QUANTIZE and DEQUANTIZE in the model, when `float_io`), weights quantized per channel or per tensor."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_disable_per_channel = not per_channel  # the converter's only switch for it
    if not float_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


HEAVY_MODULES = ("tensorflow", "keras", "tvm", "ai_edge_litert", "onnxruntime", "onnx", "onnxslim")


def cached_build_in_fresh_python(model: Path, backend: str, out: Path, samples: int = 32) -> tuple[bool, str, list]:
    """build() in a new interpreter: (cached, the backend used, the heavy libraries it imported)."""
    probe = (f"import json, sys; from pathlib import Path; from toolchain.pipeline.build import BuildOptions, build; "
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


EM_ARM, EM_X86_64, EM_AARCH64 = 40, 62, 183  # ELF e_machine values


def elf_machine(path: Path) -> int:
    """The e_machine field of an ELF file (EM_ARM, EM_X86_64, EM_AARCH64, ...), after checking it is one."""
    header = Path(path).read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_protocol(bundle_dir: Path, inputs: list[np.ndarray], work_dir: Path, warmup: int = 0, repeat: int = 0,
                 argv: list[str] | None = None, env: dict | None = None, cwd: Path | None = None) -> list[np.ndarray]:
    """Run a bundle exactly as the protocol in toolchain/bundle.py says, written apart from toolchain.runners so
    that it can judge them: IN/input<i>.bin in, `<entry argv> IN OUT SAMPLES WARMUP REPEAT` (under the target's
    emulator when the entry's architecture is not this machine's), OUT/output<j>.bin and, only when REPEAT > 0,
    REPEAT positive integers in OUT/timings_ns.txt. `argv` replaces the entry (e.g. ["./run.sh"]), `env` the
    environment, `cwd` the bundle folder as the working folder. Returns the outputs, each (samples, *shape)."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    entry = manifest["entry"]
    in_dir, out_dir = work_dir / "in", work_dir / "out"
    in_dir.mkdir(parents=True)
    out_dir.mkdir()
    for i, batch in enumerate(inputs):
        batch.tofile(in_dir / f"input{i}.bin")
    if argv is None:
        argv = entry["argv"]
        if entry["arch"] not in ("any", platform.machine()):
            from toolchain.target.profile import load_target

            argv = [*load_target(manifest["target"]).emulator["command"], *argv]
    samples = len(inputs[0])
    result = subprocess.run([*argv, str(in_dir), str(out_dir), str(samples), str(warmup), str(repeat)],
                            cwd=cwd or bundle_dir, env=env if env is not None else {**os.environ, **entry["env"]},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    if repeat:
        timings = (out_dir / "timings_ns.txt").read_text().split()
        assert len(timings) == repeat and all(int(t) > 0 for t in timings), timings
    else:
        assert not (out_dir / "timings_ns.txt").exists()  # REPEAT 0: no timing
    return [np.fromfile(out_dir / f"output{j}.bin", dtype=t["dtype"]).reshape(samples, *t["shape"])
            for j, t in enumerate(manifest["outputs"])]


def assert_benches_count_what_the_build_counted(built, model: Path) -> None:
    """Bench a build that counts instructions twice (3 runs, no warm-up): both give the build's exact figure."""
    from toolchain.pipeline.bench import run_bench
    from toolchain.pipeline.build import BuildOptions

    opts = BuildOptions(target=built.report["target"], model=model, backend=built.report["backend"],
                        out=built.out_dir)
    counts = [run_bench(opts, runs=3, warmup=0).report["bench"]["instructions_per_inference"] for _ in range(2)]
    assert counts == [built.report["bench"]["instructions_per_inference"]] * 2
