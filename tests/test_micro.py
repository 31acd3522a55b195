"""Microcontrollers end to end: tvm -> kernels + static C driver -> harness firmware -> qemu-system.

The models are small ones built here (a user's clone has no shared/ folder). Firmware runs on the
emulated boards under -icount shift=0 and is validated against LiteRT; the MLPerf Tiny acceptance
figures come from a separate command (see README), not from these tests.
"""

import dataclasses
import json
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from toolchain import runners
from toolchain.backends import get
from toolchain.backends.base import CompileRequest
from toolchain.pipeline.build import BuildOptions, build
from toolchain.bundle import Entry, read_manifest
from toolchain.errors import BadInput, BuildError, MissingTool
from toolchain.model import load_model
from toolchain.model.reference import reference_outputs
from toolchain.target.profile import load_target, load_target_file

from conftest import EM_ARM, assert_benches_count_what_the_build_counted, elf_machine, full_int8_tflite

# TF warns when converting to int8 inputs without input statistics: expected, the test needs none.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")

BOARD = "nucleo-l4r5zi"
THUMB_BRANCH_TO_SELF = b"\xfe\xe7"  # b .
THUMB_UNDEFINED = b"\x00\xde"  # udf #0


def _build(out: Path, model: Path, target: str = BOARD):
    return build(BuildOptions(target=target, model=model, backend="tvm", out=out))


@pytest.fixture(scope="module")
def int8_tflite(tmp_path_factory) -> Path:
    """A seeded conv net, full-integer int8 (int8 input and output); the odd file name tests that
    every C name made from it is sanitized."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((8, 8, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = tf.keras.layers.AveragePooling2D(2)(x)
    x = tf.keras.layers.Flatten()(x)
    outputs = tf.keras.layers.Dense(5, activation="softmax")(x)
    rng = np.random.default_rng(0)
    return full_int8_tflite(tf.keras.Model(inputs, outputs),
                            lambda: ([rng.uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)] for _ in range(32)),
                            tmp_path_factory.mktemp("int8") / "int8 model-v1.tflite")


@pytest.fixture(scope="module")
def fp32_build(tiny_tflite, tmp_path_factory):
    return _build(tmp_path_factory.mktemp("fp32") / "out", tiny_tflite)


def _check_firmware_report(result, target: str = BOARD) -> dict:
    report = json.loads((result.out_dir / "report.json").read_text())
    assert report["target"] == target and report["backend"] == "tvm"
    validation, bench = report["validation"], report["bench"]
    assert validation["ran"] and validation["passed"] is True and validation["samples"] == 32
    assert bench["runner"] == "qemu-system" and bench["emulated"] is True
    assert bench["instructions_per_inference"] > 1000 and bench["latency_ms"]["median"] > 0
    memory = report["memory"]
    assert 0 < memory["flash_bytes"] <= memory["flash_capacity_bytes"]
    assert 0 < memory["ram_bytes"] <= memory["ram_capacity_bytes"]
    for image in ("firmware.elf", "firmware-qemu.elf"):
        assert elf_machine(result.out_dir / "bundle" / image) == EM_ARM, image
    return report


def test_fp32_model_validates_on_emulated_board(fp32_build):
    report = _check_firmware_report(fp32_build)
    manifest = read_manifest(fp32_build.out_dir / "bundle")
    assert manifest["entry"] == {"kind": "firmware", "argv": ["./firmware-qemu.elf"], "arch": "armv7e-m", "env": {}}
    assert manifest["firmware"]["kernels"] == "llvm"
    assert report["memory"]["weights_bytes"] > 0 and report["memory"]["stack_bytes"] == 8192


def test_instruction_count_is_identical_run_to_run(fp32_build, tiny_tflite):
    assert_benches_count_what_the_build_counted(fp32_build, tiny_tflite)


def test_int8_model_validates_within_one_lsb(int8_tflite, tmp_path):
    report = _check_firmware_report(_build(tmp_path / "out", int8_tflite))
    (output,) = report["validation"]["outputs"]
    assert output["unit"] == "LSB" and output["max_abs_error"] <= 1
    # The conv's 108 and the dense layer's 180 weights stay int8 (as int32 they would take 1,152 bytes).
    assert report["memory"]["weights_bytes"] < 2 * (108 + 180)
    header = (tmp_path / "out" / "bundle" / "src" / "int8_model_v1.h").read_text()
    assert "int int8_model_v1_run(const void *input, void *output);" in header
    assert "#define INT8_MODEL_V1_INPUT0_ZERO_POINT (" in header
    assert "#define INT8_MODEL_V1_OUTPUT0_SHAPE {1, 5}" in header


def test_c_kernels_match_litert(int8_tflite, tmp_path):
    """The C route (tvm_target kind "c") is selectable and gives the same answers."""
    target = dataclasses.replace(load_target(BOARD), tvm_target={"kind": "c"})
    model = load_model(int8_tflite)
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    manifest = get("tvm").compile(CompileRequest(model, target, bundle_dir, lambda _: None)).manifest
    assert (bundle_dir / "src" / "int8_model_v1_kernels.c").is_file() and manifest["firmware"]["kernels"] == "c"
    x = np.random.default_rng(1).integers(-128, 127, (4, 1, 8, 8, 3), endpoint=True).astype(np.int8)
    result = runners.run_bundle(runners.get("qemu-system"), target, bundle_dir, manifest, [x])
    (want,) = reference_outputs(model, [x])
    assert np.abs(result.outputs[0].astype(int) - want.astype(int)).max() <= 1


@pytest.mark.parametrize("target", ["stm32f746g-disco", "corstone-300"])
def test_other_boards_run_on_their_emulators(tiny_tflite, tmp_path, target):
    _check_firmware_report(_build(tmp_path / "out", tiny_tflite, target), target)


def test_model_too_big_for_the_board_names_its_consumers(tmp_path):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((800,), batch_size=1)
    outputs = tf.keras.layers.Dense(1000)(inputs)  # 800,000 float weights: 3.2 MB, over the 2 MB of flash
    path = tmp_path / "too_big.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inputs, outputs)).convert())
    with pytest.raises(BuildError, match=r"too_big.tflite does not fit nucleo-l4r5zi: the firmware needs "
                                         r"[\d,]+ bytes of flash \(2,097,152 available\); the biggest consumers "
                                         r"are too_big_\w+_const1 \(3,200,000 bytes, .rodata\)") as err:
        _build(tmp_path / "out", path)
    assert err.value.exit_code == 1
    assert not (tmp_path / "out").exists()


def _patched_bundle(fp32_build, tmp_path: Path, code: bytes) -> tuple[Path, dict]:
    """A copy of the bundle whose emulator image starts its reset handler with `code`."""
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(fp32_build.out_dir / "bundle", bundle_dir)
    image = bundle_dir / "firmware-qemu.elf"
    data = bytearray(image.read_bytes())
    offset = _file_offset(data, _symbol_address(data, "Reset_Handler"))
    data[offset:offset + len(code)] = code
    image.write_bytes(data)
    return bundle_dir, read_manifest(bundle_dir)


def _symbol_address(elf: bytes, name: str) -> int:
    sections = _section_headers(elf)
    for kind, offset, size, link in ((s[1], s[4], s[5], s[6]) for s in sections):
        if kind != 2:  # SHT_SYMTAB
            continue
        strings = sections[link][4]
        for entry in range(offset, offset + size, 16):
            name_offset, value = struct.unpack_from("<II", elf, entry)
            if elf[strings + name_offset:elf.index(b"\0", strings + name_offset)] == name.encode():
                return value & ~1  # Thumb bit
    raise AssertionError(f"no symbol {name}")


def _file_offset(elf: bytes, address: int) -> int:
    for _, kind, _, section_address, offset, size, *_ in _section_headers(elf):
        if kind == 1 and section_address <= address < section_address + size:  # SHT_PROGBITS
            return offset + address - section_address
    raise AssertionError(f"no section holds 0x{address:x}")


def _section_headers(elf: bytes) -> list[tuple]:
    start = struct.unpack_from("<I", elf, 0x20)[0]
    entry_size, count = struct.unpack_from("<HH", elf, 0x2E)
    return [struct.unpack_from("<10I", elf, start + i * entry_size) for i in range(count)]


def _run_patched(fp32_build, tmp_path, code: bytes, timeout_s: int):
    bundle_dir, manifest = _patched_bundle(fp32_build, tmp_path, code)
    target = load_target(BOARD)
    target = dataclasses.replace(target, emulator={**target.emulator, "timeout_s": timeout_s})
    x = np.zeros((1, *manifest["inputs"][0]["shape"]), dtype=np.float32)
    return runners.run_bundle(runners.get("qemu-system"), target, bundle_dir, manifest, [x])


def test_hanging_firmware_times_out_with_a_clear_error(fp32_build, tmp_path):
    start = time.monotonic()
    with pytest.raises(BuildError, match=r"firmware-qemu.elf did not finish within 2 s on mps2-an386: "
                                         r"the firmware hangs"):
        _run_patched(fp32_build, tmp_path, THUMB_BRANCH_TO_SELF, timeout_s=2)
    assert time.monotonic() - start < 30


def test_faulting_firmware_is_reported(fp32_build, tmp_path):
    with pytest.raises(BuildError, match=r"\(exit 70\).*firmware-qemu.elf took a fault on mps2-an386 \(pc 0x"):
        _run_patched(fp32_build, tmp_path, THUMB_UNDEFINED, timeout_s=30)


@pytest.mark.fast
def test_missing_emulator_exits_3_with_the_install_hint():
    target = load_target(BOARD)
    target = dataclasses.replace(target, emulator={**target.emulator, "command": ["qemu-system-nowhere"]})
    entry = Entry(kind="firmware", argv=["./firmware-qemu.elf"], arch=target.arch)
    with pytest.raises(MissingTool, match="qemu-system-nowhere is not installed; install it with: apt-get install "
                                          "qemu-system-arm") as err:
        runners.get("qemu-system").command(target, entry, 1)
    assert err.value.exit_code == 3


@pytest.mark.fast
def test_bare_metal_target_must_say_how_to_build_firmware(tmp_path):
    text = load_target(BOARD).path.read_text()
    path = tmp_path / f"{BOARD}.toml"
    path.write_text(text[:text.index("[firmware]")] + text[text.index("[emulator]"):])
    with pytest.raises(BadInput, match=r"a bare-metal target \(os \"none\"\) needs a \[firmware\] table"):
        load_target_file(path)
