"""ARM Linux boards under emulation: the profiles, the emulated Raspberry Pi OS userland, Python bundles
validated in it, and exact instruction counts from the qemu plugin."""

import dataclasses
import importlib.metadata
import subprocess
import sys
import time

import numpy as np
import pytest

from toolchain import runners
from toolchain.hostenv import userland
from toolchain.pipeline.build import BuildOptions, build
from toolchain.bundle import entry_of, read_manifest
from toolchain.errors import BadInput
from toolchain.target.profile import load_target

from conftest import PROJECT_ROOT, invoke

# target -> (the board's CPU, the CPU qemu emulates it with, /proc/cpuinfo's part number)
LINUX_BOARDS = {
    "rpi3": ("cortex-a53", "cortex-a53", "0xd03"),
    "rpi4": ("cortex-a72", "cortex-a72", "0xd08"),
    "jetson-orin-nano-cpu": ("cortex-a78ae", "cortex-a76", "0xd42"),
}


def _module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)


@pytest.mark.fast
@pytest.mark.parametrize("name", sorted(LINUX_BOARDS))
def test_linux_board_profile(name):
    cpu, emulated_cpu, _ = LINUX_BOARDS[name]
    target = load_target(name)
    command = target.emulator["command"]
    assert (target.arch, target.cpu, target.tvm_target["mcpu"]) == ("aarch64", cpu, cpu)
    assert command[command.index("-cpu") + 1] == emulated_cpu
    assert emulated_cpu in subprocess.run([command[0], "-cpu", "help"], capture_output=True, text=True).stdout
    assert {"tvm", "litert", "onnxruntime"} <= set(target.backends)


def test_userland_and_plugin_builds_are_noops_when_current():
    said = {}
    for args, present in ((("toolchain.hostenv", "userland", "aarch64"), "userland is present"),
                          (("toolchain.hostenv", "qemu-plugin"), "plugin is present")):
        assert _module(*args).returncode == 0  # builds when bootstrap has not
        started = time.monotonic()
        again = _module(*args)
        assert again.returncode == 0 and present in again.stdout, again.stderr
        assert time.monotonic() - started < 10
        said[args[1]] = again.stdout
    built = userland.find("aarch64")
    assert built.python.is_file() and built.bytes > 20e6
    assert f"({built.bytes / 1e6:.0f} MB)" in said["userland"]  # its size, reported


@pytest.mark.parametrize("name", ["rpi3", "rpi4"])
def test_board_python_sees_the_board(name):
    target = load_target(name)
    probe = ("import importlib.metadata as m, platform, sys; print(platform.machine(), sys.version.split()[0]); "
             "print(*(m.version(d) for d in ('numpy', 'ai-edge-litert', 'onnxruntime'))); "
             "print(open('/proc/cpuinfo').read())")
    argv, _ = runners.get("qemu-user").command(target, entry_of({"entry": {
        "kind": "python", "argv": ["python3", "-c", probe], "arch": "any", "env": {}}}), 1)
    seen = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert seen.returncode == 0, seen.stderr
    machine, wheels, cpuinfo = seen.stdout.split("\n", 2)
    assert machine.split()[0] == "aarch64" and machine.split()[1].startswith("3.11.")
    assert wheels.split() == [importlib.metadata.version(d) for d in ("numpy", "ai-edge-litert", "onnxruntime")]
    assert f"CPU part\t: {LINUX_BOARDS[name][2]}" in cpuinfo and cpuinfo.count("processor\t:") == 4


@pytest.fixture(scope="module")
def rpi4_builds(tmp_path_factory, tiny_tflite, tiny_onnx):
    """The tiny models built for rpi4 with each backend, validated under emulation."""
    out = tmp_path_factory.mktemp("rpi4")
    models = {"tvm": tiny_tflite, "litert": tiny_tflite, "onnxruntime": tiny_onnx}
    return {backend: build(BuildOptions(target="rpi4", model=model, backend=backend, out=out / backend))
            for backend, model in models.items()}


@pytest.mark.parametrize("backend", ["tvm", "litert", "onnxruntime"])
def test_rpi4_bundles_validate_under_emulation(rpi4_builds, backend):
    report = rpi4_builds[backend].report
    assert report["validation"]["ran"] and report["validation"]["passed"], report["validation"]["status"]
    bench = report["bench"]
    assert bench["runner"] == "qemu-user" and bench["emulated"] is True and "emulation" in bench["note"]
    assert bench["latency_ms"]["median"] > 0 and bench["instructions_per_inference"] > 1000


# litert's count (a Python bundle in the emulated userland) is slow and repeats what tvm's shows.
@pytest.mark.parametrize("backend", ["tvm", pytest.param("litert", marks=pytest.mark.slow)])
def test_instruction_counts_are_the_same_run_after_run(rpi4_builds, backend, tmp_path):
    target, bundle = load_target("rpi4"), rpi4_builds[backend].out_dir / "bundle"
    manifest = read_manifest(bundle)
    rng = np.random.default_rng(5)
    for i, spec in enumerate(manifest["inputs"]):
        rng.random((2, *spec["shape"])).astype(spec["dtype"]).tofile(tmp_path / f"input{i}.bin")
    runner = runners.get("qemu-user")
    # Single-threaded whatever --threads says; the figure is sample 0's (some kernels' counts depend on the data).
    counts = [runner.count_instructions(runners.RunRequest(target, bundle, manifest, tmp_path, tmp_path, 2, 0, 0, threads,
                                                           600)).instructions_per_inference for threads in (1, 4)]
    assert counts[0] == counts[1] > 1000


@pytest.mark.fast
def test_python_bundle_without_a_userland_is_not_run():
    rpi4 = load_target("rpi4")
    python_entry = entry_of({"entry": {"kind": "python", "argv": ["python3", "./run.py"], "arch": "any", "env": {}}})
    armv7 = dataclasses.replace(rpi4, name="armv7-board", arch="armv7l")
    reason = runners.get("qemu-user").unavailable_reason(armv7, python_entry)
    assert "no emulated userland exists for armv7l" in reason


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rpi3", "jetson-orin-nano-cpu"])
def test_other_boards_run_tvm_and_litert_under_emulation(name, tiny_tflite, tmp_path):
    for backend in ("tvm", "litert"):
        report = build(BuildOptions(target=name, model=tiny_tflite, backend=backend, out=tmp_path / backend)).report
        assert report["validation"]["passed"] and report["bench"]["instructions_per_inference"] > 1000


def test_rpi2_says_why_each_backend_cannot_serve_it(tiny_tflite, tmp_path):
    rpi2 = load_target("rpi2")
    assert (rpi2.arch, rpi2.cross_prefix, rpi2.emulator["command"][0]) == ("armv7l", "arm-linux-gnueabihf-", "qemu-arm")
    for backend in ("litert", "onnxruntime"):
        with pytest.raises(BadInput, match=f"backend '{backend}' does not serve target 'rpi2': PyPI has no 32-bit"):
            build(BuildOptions(target="rpi2", model=tiny_tflite, backend=backend, out=tmp_path / backend))
    assert not list(tmp_path.iterdir())  # tvm serves it without a TVM runtime: tests/test_rpi2.py


@pytest.mark.slow  # the CLI over what test_instruction_counts_are_the_same_run_after_run checks
def test_two_benches_print_the_same_instructions(tiny_tflite, tmp_path):
    args = ["bench", "--target", "rpi4", "--backend", "tvm", "--model", str(tiny_tflite), "--out", str(tmp_path),
            "--runs", "3", "--warmup", "0"]
    printed = []
    for _ in range(2):
        result = invoke(*args)
        assert result.returncode == 0, result.stderr
        printed += [line for line in result.stdout.splitlines() if line.startswith("instructions per inference:")]
    assert len(printed) == 2 and printed[0] == printed[1], printed
