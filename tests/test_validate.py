import numpy as np
import pytest

from toolchain.pipeline import validate
from toolchain.pipeline.stats import latency_ms
from toolchain.options import parse_input_shapes
from toolchain.errors import BadInput
from toolchain.model.info import ModelInfo, TensorInfo

pytestmark = pytest.mark.fast  # numpy only: no framework, no compiler

FLOAT_OUT = TensorInfo("probs", (1, 4), "float32")
INT8_OUT = TensorInfo("q", (1, 4), "int8", (0.1, -3))


def _model(*inputs):
    return ModelInfo(path=__import__("pathlib").Path("m.tflite"), format="tflite", sha256="", inputs=list(inputs),
                     outputs=[FLOAT_OUT])


def test_random_inputs_are_seeded_and_cover_int8_range():
    model = _model(TensorInfo("x", (1, 3), "float32"), TensorInfo("q", (1, 64), "int8", (0.5, 0)))
    a, b = validate.make_inputs(model, 50), validate.make_inputs(model, 50)
    assert a.tensors[0].shape == (50, 1, 3) and a.tensors[0].dtype == np.float32
    assert np.array_equal(a.tensors[1], b.tensors[1]) and a.labels is None
    assert a.tensors[1].min() == -128 and a.tensors[1].max() == 127
    assert not np.array_equal(a.tensors[0], validate.make_inputs(model, 50, seed=1).tensors[0])


def test_dataset_inputs_are_quantized_for_int8_models(tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, x_test=np.array([[0.0, 1.0], [-1.0, 100.0]], np.float32), y_test=np.array([1, 0]))
    model = _model(TensorInfo("x", (1, 2), "int8", (0.5, 1)))
    inputs = validate.make_inputs(model, 32, data)
    assert inputs.tensors[0].tolist() == [[[1, 3]], [[-1, 127]]]  # round(x / 0.5) + 1, clipped
    assert inputs.labels.tolist() == [1, 0] and "d.npz" in inputs.source


def test_dataset_shape_mismatch_is_bad_input(tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((4, 5), np.float32))
    with pytest.raises(BadInput, match=r"d\.npz: samples of shape \[5\] do not fit input 'x'"):
        validate.make_inputs(_model(TensorInfo("x", (1, 2), "float32")), 4, data)


def test_float_comparison_scales_with_reference():
    ref = np.array([[[0.1, 0.2, 0.3, 0.4]]] * 2, np.float32)
    ok = validate.compare([ref + 5e-5], [ref], [FLOAT_OUT])
    assert ok["passed"] and ok["top1_agreement"] == 1.0 and ok["samples"] == 2
    bad = validate.compare([ref + 5e-4], [ref], [FLOAT_OUT])
    assert not bad["passed"] and bad["max_abs_error"] == pytest.approx(5e-4, rel=1e-3)
    assert "output 'probs' is off by" in validate.failure_summary(bad)
    big = ref * 1000  # logits: tolerance grows with magnitude
    assert validate.compare([big + 0.03], [big], [FLOAT_OUT])["passed"]


def test_int8_tolerance_is_one_lsb_and_nan_fails():
    ref = np.array([[[-128, 0, 5, 127]]], np.int8)
    assert validate.compare([ref + np.int8(1) * (ref < 127)], [ref], [INT8_OUT])["passed"]
    two_off = ref.copy()
    two_off[0, 0, 1] = 2
    result = validate.compare([two_off], [ref], [INT8_OUT])
    assert not result["passed"] and result["outputs"][0]["unit"] == "LSB" and result["max_abs_error"] == 2
    nan = np.array([[[np.nan, 0.2, 0.3, 0.4]]], np.float32)
    assert not validate.compare([nan], [np.zeros_like(nan)], [FLOAT_OUT])["passed"]


def test_float_output_dequantized_from_a_grid_may_be_one_step_off():
    step = 1 / 256  # exact in float32, so ref + step is exactly one step away
    dequantized = TensorInfo("probs", (1, 4), "float32", (step, 0))  # an ONNX QDQ model's softmax output
    ref = np.array([[[0, 51, 102, 102]]], np.float32) * step
    assert validate.compare([ref + step], [ref], [dequantized])["passed"]
    assert not validate.compare([ref + step], [ref], [FLOAT_OUT])["passed"]  # no grid: the float tolerance
    assert not validate.compare([ref + 2 * step], [ref], [dequantized])["passed"]


def test_accuracy_and_top1_agreement():
    ref = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]].reshape(4, 1, 4)
    got = np.eye(4, dtype=np.float32)[[0, 1, 3, 3]].reshape(4, 1, 4)
    result = validate.compare([got], [ref], [FLOAT_OUT], labels=np.array([0, 1, 2, 2]))
    assert result["top1_agreement"] == 0.75
    assert result["accuracy"] == 0.5 and result["reference_accuracy"] == 0.75


def test_latency_statistics():
    stats = latency_ms([1_000_000 * k for k in range(1, 101)])
    assert stats["median"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(90.1)
    assert latency_ms([]) is None


def test_parse_input_shapes():
    assert parse_input_shapes(["input_1:1x49x10x1", "a:b:2"]) == {"input_1": (1, 49, 10, 1), "a:b": (2,)}
    for bad in ["1x2", "x:1xq", "x:0x3"]:
        with pytest.raises(BadInput, match="--input-shape"):
            parse_input_shapes([bad])


def test_labels_as_indices_columns_or_one_hot_give_the_same_classes():
    from toolchain.model.data import class_indices

    classes = np.array([2, 0, 1])
    for labels in (classes, classes[:, None], np.eye(3)[classes]):
        np.testing.assert_array_equal(class_indices(labels), classes)


def test_interleaved_timing_gives_every_bundle_each_place_in_the_rounds():
    from pathlib import Path
    from toolchain.pipeline.timing import interleaved

    order = []

    class Recorded:
        def __init__(self, name):
            self.out_dir = Path(name)

        def run(self, target, warmup, runs, threads, count_instructions):
            order.append((self.out_dir.name, runs, count_instructions))

    names = ["tvm", "litert", "onnxruntime"]
    interleaved([Recorded(n) for n in names], None, 1, 10, 3, 1, lambda text: None)
    rounds = [order[i:i + 3] for i in range(0, 9, 3)]
    assert [[name for name, _, _ in r] for r in rounds] == [names, names[1:] + names[:1], names[2:] + names[:2]]
    assert all(runs == 4 for _, runs, _ in order)  # ceil(10 / 3) per round: at least 10 in all
    assert [counted for _, _, counted in order] == [True] * 3 + [False] * 6  # instructions in the first round only


def test_bench_linux_table_gives_a_failed_variant_its_whole_reason_under_the_table():
    from toolchain.pipeline.linux_bench import VARIANTS, linux_bench_text

    why = ("/models/mlperf/kws.tflite: validation failed for onnxruntime on host: max abs error 55 LSB over the "
           "1 LSB tolerance\n(int8 rounding differs)")
    cells = {v: {"backend": "tvm", "error": None, "latency_ms": 0.125, "instructions_per_inference": None}
             for v in VARIANTS}
    cells["onnxruntime"] = {"error": why}
    text = linux_bench_text({"models": "m", "runs": 10, "rounds": 5, "rows": [
        {"model": "kws.tflite", "target": "host", "by": "latency", "cells": cells, "auto_over_best_runtime": 0.7}]})
    table_rows, note = text.splitlines()[3], text.splitlines()[-1]
    assert "failed [1]" in table_rows and "0.125 ms [tvm]" in table_rows and "0.70" in table_rows
    assert note == ("[1] onnxruntime, kws.tflite on host: validation failed for onnxruntime on host: max abs error "
                    "55 LSB over the 1 LSB tolerance\\n(int8 rounding differs)")
