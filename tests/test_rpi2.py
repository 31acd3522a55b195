"""The 32-bit ARM board (rpi2) with no TVM runtime: TVM's kernels and the static C driver linked with
the Linux harness into one armhf executable, run under qemu-arm, validated, instructions counted.

The models are small ones built here; the MLPerf Tiny figures come from `invoke bench` (see README).
"""

import dataclasses
import json
import subprocess

import numpy as np
import pytest

from toolchain import runners
from toolchain.pipeline.build import BuildOptions, build
from toolchain.bundle import entry_of, read_manifest
from toolchain.errors import BadInput
from toolchain.target.profile import load_target, load_target_file

from conftest import EM_ARM, assert_benches_count_what_the_build_counted, elf_machine, full_int8_tflite

# TF warns when converting to int8 inputs without input statistics: expected, the test needs none.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")

BOARD = "rpi2"
ELFCLASS32, ELFDATA2LSB = 1, 1
EF_ARM_ABI_FLOAT_HARD, EF_ARM_EABI_VER5 = 0x400, 0x05000000


def _build(model, out):
    return build(BuildOptions(target=BOARD, model=model, backend="tvm", out=out))


@pytest.fixture(scope="module")
def fp32_build(tiny_tflite, tmp_path_factory):
    return _build(tiny_tflite, tmp_path_factory.mktemp("rpi2") / "out")


def _check_report(result) -> dict:
    report = json.loads((result.out_dir / "report.json").read_text())
    assert report["target"] == BOARD and report["backend"] == "tvm"
    validation, bench = report["validation"], report["bench"]
    assert validation["ran"] and validation["passed"] is True and validation["samples"] == 32
    assert bench["runner"] == "qemu-user" and bench["emulated"] is True and "emulation" in bench["note"]
    assert bench["latency_ms"]["median"] > 0 and bench["instructions_per_inference"] > 1000
    return report


def test_fp32_model_runs_as_one_armhf_executable_and_validates(fp32_build):
    report = _check_report(fp32_build)
    bundle_dir = fp32_build.out_dir / "bundle"
    manifest = read_manifest(bundle_dir)
    assert manifest["entry"] == {"kind": "native", "argv": ["./runner"], "arch": "armv7l", "env": {}}
    assert report["static_driver"] == manifest["static_driver"]
    assert manifest["static_driver"]["kernels"] == "llvm" and manifest["static_driver"]["weights_bytes"] > 0
    assert "## No TVM runtime" in (fp32_build.out_dir / "report.md").read_text()
    header = (bundle_dir / "runner").read_bytes()[:52]
    assert header[:4] == b"\x7fELF" and (header[4], header[5]) == (ELFCLASS32, ELFDATA2LSB)
    assert elf_machine(bundle_dir / "runner") == EM_ARM
    flags = int.from_bytes(header[36:40], "little")
    assert flags & 0xFF000000 == EF_ARM_EABI_VER5 and flags & EF_ARM_ABI_FLOAT_HARD  # armhf's ABI
    # No TVM runtime: the executable needs the C library only, and the bundle carries no libraries.
    dynamic = subprocess.run(["arm-linux-gnueabihf-readelf", "-d", bundle_dir / "runner"], capture_output=True,
                             text=True, check=True).stdout
    needed = {line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line}
    assert "libc.so.6" in needed and needed <= {"libc.so.6", "libm.so.6"}
    assert not list(bundle_dir.rglob("*.so*"))


def test_instruction_count_is_identical_run_to_run(fp32_build, tiny_tflite):
    assert_benches_count_what_the_build_counted(fp32_build, tiny_tflite)


def test_int8_model_validates_within_one_lsb(tiny_keras, tmp_path):
    import keras

    rng = np.random.default_rng(0)
    model = full_int8_tflite(keras.models.load_model(tiny_keras),
                             lambda: ([rng.uniform(-1, 1, (1, 8, 8, 1)).astype(np.float32)] for _ in range(32)),
                             tmp_path / "tiny int8-v1.tflite")  # the odd name: every C name made from it is sanitized
    report = _check_report(_build(model, tmp_path / "out"))
    (output,) = report["validation"]["outputs"]
    assert output["unit"] == "LSB" and output["max_abs_error"] <= 1
    assert "int tiny_int8_v1_run(const void *input, void *output);" in \
        (tmp_path / "out" / "bundle" / "src" / "tiny_int8_v1.h").read_text()


def _run_runner(fp32_build, *args: str) -> subprocess.CompletedProcess:
    bundle_dir = fp32_build.out_dir / "bundle"
    argv, _ = runners.get("qemu-user").command(load_target(BOARD), entry_of(read_manifest(bundle_dir)), 1)
    return subprocess.run([*argv, *args], cwd=bundle_dir, capture_output=True, text=True, timeout=60)


def test_runner_refuses_bad_arguments_and_inputs(fp32_build, tmp_path):
    usage = _run_runner(fp32_build, str(tmp_path), str(tmp_path), "two", "0", "0")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    (tmp_path / "input0.bin").write_bytes(b"\0" * 7)  # not a whole sample
    short = _run_runner(fp32_build, str(tmp_path), str(tmp_path), "1", "0", "0")
    assert short.returncode == 1
    assert f"runner: {tmp_path}/input0.bin holds 7 bytes; expected 256 (SAMPLES 1 x 256 bytes)" in short.stderr


@pytest.mark.fast
def test_tvm_runtime_field_is_checked(tmp_path):
    assert (load_target("rpi2").tvm_runtime, load_target("rpi4").tvm_runtime) == ("none", "shared")
    assert load_target("nucleo-l4r5zi").tvm_runtime == "none"  # implied by os "none"
    rpi2_text = load_target("rpi2").path.read_text()
    path = tmp_path / "rpi2.toml"
    path.write_text(rpi2_text.replace('tvm_runtime = "none"', 'tvm_runtime = "static"'))
    with pytest.raises(BadInput, match=r"rpi2.toml: tvm_runtime is 'static'; use 'shared' or 'none'"):
        load_target_file(path)
    board_text = load_target("nucleo-l4r5zi").path.read_text()
    path = tmp_path / "nucleo-l4r5zi.toml"
    path.write_text(board_text.replace("[memory]", 'tvm_runtime = "shared"\n\n[memory]'))
    with pytest.raises(BadInput, match=r"has no TVM runtime; tvm_runtime must be 'none'"):
        load_target_file(path)


def test_shared_runtime_dispatch_still_needs_the_armv7_runtime(tiny_tflite, tmp_path):
    """The same board with the shared TVM runtime is refused: there is no armv7 build of it."""
    from toolchain.backends import get
    from toolchain.backends.base import CompileRequest
    from toolchain.model import load_model

    target = dataclasses.replace(load_target(BOARD), tvm_runtime="shared")
    with pytest.raises(BadInput, match="no TVM runtime is available for architecture 'armv7l'"):
        get("tvm").compile(CompileRequest(load_model(tiny_tflite), target, tmp_path, lambda _: None))
