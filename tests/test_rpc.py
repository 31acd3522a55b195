"""TVM RPC device farm: a real tracker and a real server on 127.0.0.1, each in its own process group.

The server is this machine registered under a key, so the bundles are built for target host; the
upload, remote load, remote runs and time_evaluator figures go through TVM's RPC for real.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from toolchain import runners
from toolchain.pipeline.build import BuildOptions, build
from toolchain.bundle import entry_of, read_manifest
from toolchain.errors import BadInput, BuildError
from toolchain.target.profile import load_target

from conftest import free_port, invoke

KEY = "loopback-board"


def _start(*args: str) -> subprocess.Popen:
    # Own session: the server forks a worker per connection, and the whole group must go at the end.
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def farm():
    from tvm import rpc

    tracker_port, server_port = free_port(), free_port()
    processes = [_start("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tracker_port),
                        "--port-end", str(tracker_port + 1), "--silent")]
    try:
        processes.append(_start("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
                                "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{tracker_port}",
                                "--key", KEY, "--silent"))
        deadline = time.monotonic() + 60
        while True:  # until the server has registered with the tracker
            for process in processes:
                if process.poll() is not None:
                    pytest.fail(f"{process.args[2]} exited: {process.stderr.read().strip()[-500:]}")
            try:
                if rpc.connect_tracker("127.0.0.1", tracker_port).summary()["queue_info"].get(KEY, {}).get("free"):
                    break
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("the TVM RPC server did not register with the tracker within 60 s")
            time.sleep(0.5)
        yield f"127.0.0.1:{tracker_port}"
    finally:
        for process in reversed(processes):
            _stop(process)


@pytest.fixture(scope="module")
def host_tvm_build(tmp_path_factory, tiny_onnx):
    return build(BuildOptions(target="host", model=tiny_onnx, backend="tvm",
                              out=tmp_path_factory.mktemp("rpc-build") / "tvm"))


def _inputs(manifest: dict, samples: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    return [rng.random((samples, *spec["shape"])).astype(spec["dtype"]) for spec in manifest["inputs"]]


def test_bundle_runs_on_the_farm_board(farm, host_tvm_build):
    target, bundle = load_target("host"), host_tvm_build.out_dir / "bundle"
    manifest = read_manifest(bundle)
    runner, why = runners.select(target, entry_of(manifest), runners.Connection(rpc=farm, key=KEY))
    assert runner is not None and runner.name == "tvm-rpc", why
    inputs = _inputs(manifest)
    remote = runners.run_bundle(runner, target, bundle, manifest, inputs, warmup=2, repeat=6)
    local = runners.run_bundle(runners.get("host"), target, bundle, manifest, inputs)
    np.testing.assert_allclose(remote.outputs[0], local.outputs[0], rtol=0, atol=1e-6)
    assert len(remote.timings_ns) == 6 and min(remote.timings_ns) > 0 and remote.emulated is False


def test_unknown_key_and_unreachable_tracker_fail_fast(farm, host_tvm_build):
    target, bundle = load_target("host"), host_tvm_build.out_dir / "bundle"
    manifest = read_manifest(bundle)
    started = time.monotonic()
    runner, _ = runners.select(target, entry_of(manifest), runners.Connection(rpc=farm, key="no-such-board"))
    with pytest.raises(BadInput, match=f"no board is registered with key 'no-such-board'.*registered: {KEY}"):
        runners.run_bundle(runner, target, bundle, manifest, _inputs(manifest, 1))
    runner, _ = runners.select(target, entry_of(manifest), runners.Connection(rpc=f"127.0.0.1:{free_port()}",
                                                                              key=KEY))
    with pytest.raises(BuildError, match="cannot reach the TVM RPC tracker"):
        runners.run_bundle(runner, target, bundle, manifest, _inputs(manifest, 1))
    assert time.monotonic() - started < 15
    with pytest.raises(BadInput, match="--rpc needs --key"):
        runners.select(target, entry_of(manifest), runners.Connection(rpc=farm))


@pytest.mark.slow  # the tvm-rpc runner: test_bundle_runs_on_the_farm_board; the CLI bench: test_ssh
def test_cli_bench_on_the_farm(farm, tiny_onnx, tmp_path):
    common = ["--target", "host", "--model", str(tiny_onnx), "--out", str(tmp_path / "b"), "--rpc", farm,
              "--key", KEY]
    benched = invoke("bench", "--backend", "tvm", "--runs", "9", *common)
    assert benched.returncode == 0, benched.stderr
    assert "over 9 runs on tvm-rpc" in benched.stdout
    refused = invoke("bench", "--backend", "onnxruntime", *common)
    assert refused.returncode != 0 and "tvm-rpc: it runs TVM bundles only" in refused.stderr


@pytest.mark.fast
def test_a_board_without_a_tvm_runtime_is_refused_before_connecting():
    from toolchain.bundle import Entry

    runner = runners.get("tvm-rpc").connect(runners.Connection(rpc="127.0.0.1:9", key=KEY))
    assert "no TVM runtime" in runner.unavailable_reason(load_target("rpi2"), Entry("native", ["./run.sh"], "armv7l"))
    assert runner.unavailable_reason(load_target("rpi4"), Entry("native", ["./run.sh"], "aarch64")) is None


def test_tune_times_candidates_on_the_farm_board(farm, tmp_path, tiny_tflite):
    from toolchain.backends.tvm import tuning

    args = ["tune", "--target", "host", "--model", str(tiny_tflite), "--trials", "8", "--rpc", farm,
            "--tuning-db", str(tmp_path / "db")]
    tuned = invoke(*args, "--key", KEY)
    assert tuned.returncode == 0, tuned.stderr
    assert f"timing candidates on the board '{KEY}'" in tuned.stdout + tuned.stderr
    summary = (tuning.database_dir(load_target("host"), tmp_path / "db") / "tune.json").read_text()
    assert '"measured_by": "latency"' in summary and '"trials": 0' not in summary

    # A key nobody registered: one sentence before anything is built, exit 2.
    unknown = invoke(*args, "--key", "no-such-board")
    assert unknown.returncode == 2
    assert "no board is registered with key 'no-such-board'" in unknown.stderr
