"""Measuring microcontroller builds: estimated cycles from instruction classes, the TFLite Micro reference
and its minimum arena, and `invoke bench-mcu`.

The models are small int8 ones built here; the MLPerf Tiny table comes from `invoke bench-mcu` (docs/
microcontrollers.md), not from these tests.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from toolchain import elf, runners
from toolchain.errors import BadInput, BuildError
from toolchain.model.info import ModelInfo, TensorInfo
from toolchain.model.reference import ReferenceRefused, reference_name
from toolchain.pipeline.build import BuildOptions, build
from toolchain.pipeline.mcu_bench import run_mcu_bench
from toolchain.runners.qemu_system import COUNT_REPEATS, MARKERS
from toolchain.target import cycle_model
from toolchain.target.profile import load_target

from conftest import full_int8_tflite

pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected:UserWarning")

BOARD = "nucleo-l4r5zi"
DEPTHWISE = 4  # BuiltinOperator.DEPTHWISE_CONV_2D


@pytest.fixture(scope="module")
def int8_depthwise(tmp_path_factory) -> Path:
    """A seeded int8 net with a per-channel depthwise convolution, a 1x1 convolution and a dense layer."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((6, 6, 3), batch_size=1)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(inputs)
    x = tf.keras.layers.Conv2D(4, 1)(x)
    outputs = tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(x))
    rng = np.random.default_rng(0)
    return full_int8_tflite(tf.keras.Model(inputs, outputs),
                            lambda: ([rng.uniform(-1, 1, (1, 6, 6, 3)).astype(np.float32)] for _ in range(16)),
                            tmp_path_factory.mktemp("int8") / "depthwise.tflite")


@pytest.fixture(scope="module")
def litert_refuses(int8_depthwise, tmp_path_factory) -> Path:
    """The same model with the depthwise bias's quantized_dimension set to 3, as some older TFLM example models
    have it: LiteRT refuses it ("quantized_dimension must be in range [0, 1)"), TFLite Micro runs it."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(int8_depthwise))
    graph = model.subgraphs[0]
    (depthwise,) = [op for op in graph.operators if model.operatorCodes[op.opcodeIndex].builtinCode == DEPTHWISE]
    graph.tensors[depthwise.inputs[2]].quantization.quantizedDimension = 3
    path = tmp_path_factory.mktemp("axis3") / "axis3.tflite"
    flatbuffer_utils.write_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def board_build(int8_depthwise, tmp_path_factory):
    return build(BuildOptions(target=BOARD, model=int8_depthwise, backend="tvm",
                              out=tmp_path_factory.mktemp("board") / "out"))


# ---------- estimated cycles ----------


@pytest.mark.fast
@pytest.mark.parametrize("core", sorted(cycle_model.MODELS))
def test_every_core_prices_every_class_best_to_worst(core):
    model = cycle_model.MODELS[core]
    assert set(model.cycles) == set(cycle_model.CLASSES)
    assert all(best <= typical <= worst for best, typical, worst in model.cycles.values())
    assert model.source and model.accuracy


@pytest.mark.fast
def test_estimate_weights_each_class_and_moved_registers():
    model = cycle_model.MODELS["cortex-m4"]
    classes = dict.fromkeys(cycle_model.CLASSES, 0) | {"load": 10, "alu": 5, "branch": 2, "load_store_multiple": 1}
    # M4: LDR 2 (1 pipelined), ALU 1, branch 2 (1 untaken .. 4 taken), LDM 1 + 1 per register.
    assert cycle_model.estimate(model, classes, registers_moved=4) == (10 + 5 + 2 + 1 + 4, 20 + 5 + 4 + 1 + 4,
                                                                         20 + 5 + 8 + 1 + 4)
    assert cycle_model.model_for(load_target(BOARD).cpu) is model
    assert cycle_model.model_for("x86-64-v3") is None


def test_plugin_counts_by_class_what_systick_counts(board_build):
    """The plugin's instructions between the markers and SysTick's ticks of the same timed runs agree within
    the harness loop's few instructions (SysTick is read in the loop) and a tick's resolution."""
    bench = json.loads((board_build.out_dir / "report.json").read_text())["bench"]
    classes = bench["instruction_classes"]
    assert list(classes) == list(cycle_model.CLASSES) and classes["load"] > 0 and classes["multiply"] > 0
    instructions_per_tick = 10**9 / load_target(BOARD).emulator["systick_hz"]
    harness_loop = 40  # cycles_now() and the loop's own instructions, per timed run
    assert abs(sum(classes.values()) - bench["instructions_per_inference"]) <= (
        harness_loop + instructions_per_tick / COUNT_REPEATS)
    model = bench["cycle_model"]
    assert model["core"] == "cortex-m4" and "Cortex-M4 Technical Reference Manual" in model["source"]
    best, worst = model["range_per_inference"]
    assert best <= bench["estimated_cycles_per_inference"] <= worst
    assert bench["estimated_cycles_per_inference"] > bench["instructions_per_inference"]  # loads cost 2 on an M4
    report_md = (board_build.out_dir / "report.md").read_text()
    assert "Estimated cycles per inference: **" in report_md and "an estimate, not a measurement" in report_md
    assert "flash wait states, pipeline stalls and branch prediction are not modelled" in report_md


def test_markers_are_in_the_emulator_image_and_counted_once(board_build):
    image = board_build.out_dir / "bundle" / "firmware-qemu.elf"
    begin, end = (elf.function_addresses(image, MARKERS)[name] for name in MARKERS)
    assert begin != end and begin % 2 == 0  # code addresses, Thumb bit cleared
    # Counting twice gives the same classes: the figure is exact, not sampled.
    manifest = json.loads((image.parent / "manifest.json").read_text())
    x = np.zeros((1, *manifest["inputs"][0]["shape"]), np.int8)
    counts = [runners.run_bundle(runners.get("qemu-system"), load_target(BOARD), image.parent, manifest, [x],
                                 count_instructions=True).count for _ in range(2)]
    assert counts[0] == counts[1] and counts[0].instruction_classes["alu"] > 0


def test_image_without_markers_counts_instructions_only(board_build, tmp_path):
    """An image that lacks the markers (an older harness) still gets SysTick's count, and no estimate."""
    import shutil

    bundle = Path(shutil.copytree(board_build.out_dir / "bundle", tmp_path / "bundle"))
    image = bundle / "firmware-qemu.elf"
    data = image.read_bytes()
    image.write_bytes(data.replace(MARKERS[0].encode(), b"x" * len(MARKERS[0])))  # the symbol is gone by name
    manifest = json.loads((bundle / "manifest.json").read_text())
    x = np.zeros((1, *manifest["inputs"][0]["shape"]), np.int8)
    count = runners.run_bundle(runners.get("qemu-system"), load_target(BOARD), bundle, manifest, [x],
                               count_instructions=True).count
    assert count.instructions_per_inference > 1000 and count.estimated_cycles_per_inference is None


# ---------- the TFLite Micro reference and its arena ----------


@pytest.mark.fast
def test_a_backends_reference_applies_to_the_format_it_reads():
    tflite = ModelInfo(path=Path("m.tflite"), format="tflite", sha256="", inputs=[TensorInfo("x", (1,), "int8")],
                       outputs=[])
    keras = dataclasses.replace(tflite, path=Path("m.keras"), format="keras")
    assert reference_name(tflite) == "litert" and reference_name(tflite, "tflite-micro") == "tflite-micro"
    assert reference_name(keras, "tflite-micro") == "tensorflow"  # TFLite Micro cannot read a Keras model


def test_tflite_micro_reference_runs_int8_models_within_one_lsb_of_litert(int8_depthwise):
    """Not bit-exact: on this model LiteRT's optimized kernels and TFLM's reference kernels round a few outputs
    1 LSB apart, which is why a backend names the reference it matches (BackendCaps.reference)."""
    from toolchain.model import load_model
    from toolchain.model.reference import reference_outputs

    info = load_model(int8_depthwise)
    x = np.random.default_rng(3).integers(-128, 128, (8, *info.inputs[0].shape), dtype=np.int8)
    (litert,) = reference_outputs(info, [x])
    (micro,) = reference_outputs(info, [x], "tflite-micro")
    assert micro.dtype == np.int8 and micro.shape == litert.shape
    assert np.abs(micro.astype(int) - litert.astype(int)).max() <= 1


def test_litert_refused_model_falls_back_to_tflite_micro_on_microcontrollers(litert_refuses):
    from toolchain.model import load_model
    from toolchain.model.reference import run_reference

    info = load_model(litert_refuses)
    x = np.zeros((2, *info.inputs[0].shape), np.int8)
    with pytest.raises(ReferenceRefused, match=r"litert could not load .*quantized_dimension must be in range"):
        run_reference(info, [x], "litert", microcontroller=False)
    ran = run_reference(info, [x], "litert", microcontroller=True)
    assert ran.framework == "tflite-micro" and ran.outputs[0].shape == (2, 1, 3)
    assert "quantized_dimension must be in range" in ran.note and ran.note.endswith("tflite-micro ran it instead")


def test_build_reports_the_tflm_arena_and_the_reference_it_ran(board_build, int8_depthwise):
    from toolchain.model.tflm_arena import minimum_arena_bytes

    report = json.loads((board_build.out_dir / "report.json").read_text())
    assert report["validation"]["reference"] == "litert" and report["validation"]["reference_note"] is None
    arena = report["memory"]["tflm_arena_bytes"]
    assert arena == minimum_arena_bytes(int8_depthwise) > 0  # the same figure, measured again
    assert "tflite-micro" in report["toolchain"]  # the fallback reference's version is part of the cache key
    assert "TFLite Micro's minimum arena" in (board_build.out_dir / "report.md").read_text()


def test_tflm_arena_of_a_file_tflm_cannot_read_is_one_clear_error(tmp_path):
    from toolchain.model.tflm_arena import minimum_arena_bytes

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3 not really a model")
    with pytest.raises(BuildError, match=r"TFLite Micro could not measure its arena for .*bad.tflite"):
        minimum_arena_bytes(bad)


# ---------- invoke bench-mcu ----------


@pytest.mark.fast
def test_bench_mcu_names_a_backend_that_does_not_exist(tmp_path):
    with pytest.raises(BadInput, match=r"^backend 'cmsis' does not exist \(known: .*tvm.*\)\.$") as err:
        run_mcu_bench(BOARD, tmp_path, ["cmsis", "tvm"], tmp_path / "out")
    assert err.value.exit_code == 2


@pytest.mark.fast
def test_bench_mcu_refuses_folders_without_the_models_and_non_microcontrollers(tmp_path):
    with pytest.raises(BadInput, match=r"holds none of the MLPerf Tiny int8 models \(kws_ref_model.tflite"):
        run_mcu_bench(BOARD, tmp_path, ["tvm"], tmp_path / "out")
    with pytest.raises(BadInput, match=r"target 'rpi4' is not a microcontroller"):
        run_mcu_bench("rpi4", tmp_path, ["tvm"], tmp_path / "out")


def test_bench_mcu_table(int8_depthwise, tmp_path):
    """A folder holding one model under an MLPerf Tiny name: one row with every column, written as JSON and Markdown."""
    from toolchain.pipeline.report import MCU_BENCH_HEADERS, mcu_bench_text

    models = tmp_path / "models"
    models.mkdir()
    (models / "ad01_int8.tflite").write_bytes(int8_depthwise.read_bytes())
    bench = run_mcu_bench(BOARD, models, ["tvm"], tmp_path / "out", samples=4)
    (row,) = bench["rows"]
    assert row["validated"] and row["max_abs_error"] <= 1 and row["error_unit"] == "LSB"
    assert row["estimated_cycles_per_inference"] > row["instructions_per_inference"] > 1000
    assert row["tflm_arena_bytes"] > 0 and row["working_memory_bytes"] > 0 and row["flash_bytes"] > 0 and row["ram_bytes"] > 0
    assert row["published_cycles"] == 486_000 and "Plumerai" in row["published_source"]
    assert row["cycles_over_published"] == round(row["estimated_cycles_per_inference"] / 486_000, 2)
    saved = json.loads((tmp_path / "out" / "mcu_bench.json").read_text())
    assert saved["rows"] == bench["rows"]
    markdown = (tmp_path / "out" / "mcu_bench.md").read_text()
    assert "| " + " | ".join(MCU_BENCH_HEADERS) + " |" in markdown and "| ad01_int8.tflite | tvm | yes (" in markdown
    text = mcu_bench_text(bench)
    assert "instructions: counted by the emulator" in text and "cycles: an estimate" in text


@pytest.mark.fast
def test_a_damaged_elf_image_is_one_sentence(tmp_path):
    """A truncated image (its section headers past the end of the file) is bad input, not a traceback."""
    import struct

    from toolchain.elf import ElfImage

    header = bytearray(b"\x7fELF\x01\x01" + bytes(0x34 - 6))
    struct.pack_into("<I", header, 0x20, 4096)  # section headers far past the end
    struct.pack_into("<HH", header, 0x2E, 40, 1)  # one 40-byte section header
    image = tmp_path / "damaged.elf"
    image.write_bytes(bytes(header))
    with pytest.raises(BadInput, match=r"damaged.elf is not a readable 32-bit ELF image"):
        ElfImage(image)
