"""invoke inspect on a model whose shapes cannot be worked out with its dynamic dimensions pinned to 1."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import invoke
from toolchain.errors import EXIT_BAD_INPUT
from toolchain.model import load_model
from toolchain.model.pinning import UnresolvedShapes


@pytest.fixture(scope="module")
def reshaping_onnx(tmp_path_factory) -> Path:
    """x [batch, length] reshaped to [-1, 4], then times a 4x2 matrix: at 1x1 (dynamic dims pinned to 1) neither
    shape inference nor a run can tell the output's shape, since 1 element cannot be reshaped to rows of 4."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "rows_of_4"], ["rows"]), helper.make_node("MatMul", ["rows", "w"], ["y"])],
        "reshaping", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [numpy_helper.from_array(np.array([-1, 4], dtype=np.int64), "rows_of_4"),
         numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("inspect") / "reshaping.onnx"
    onnx.save(model, str(path))
    return path


def test_lists_the_dynamic_inputs_and_how_to_pin_them(reshaping_onnx):
    result = invoke("inspect", str(reshaping_onnx))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "inputs (? marks a dynamic dimension)" in lines
    assert ["x", "?x?", "float32"] in [line.split() for line in lines]
    assert "the dynamic dimensions of 'x' [?, ?] were pinned to 1: pin each with --input-shape NAME:SHAPE" \
        in result.stdout
    assert "onnxruntime" not in result.stderr and "Traceback" not in result.stderr  # its own log stays out


def test_pinned_it_describes_the_model(reshaping_onnx):
    result = invoke("inspect", str(reshaping_onnx), "--input-shape", "x:2x6")
    assert result.returncode == 0, result.stderr
    assert ["y", "3x2", "float32", "-"] in [line.split() for line in result.stdout.splitlines()]  # 12 values: 3 rows


def test_pins_that_still_do_not_fit_are_bad_input(reshaping_onnx):
    result = invoke("inspect", str(reshaping_onnx), "--input-shape", "x:2x7")  # 14 values: no rows of 4
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stdout == "" and result.stderr.startswith(f"error: {reshaping_onnx} has output shapes")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_build_stops_naming_the_inputs_to_pin(reshaping_onnx):
    with pytest.raises(UnresolvedShapes, match=r"'x' \[\?, \?\] were pinned to 1: pin each with --input-shape") as err:
        load_model(reshaping_onnx)
    assert err.value.exit_code == EXIT_BAD_INPUT
    assert [(i.name, i.dims, i.dtype) for i in err.value.inputs] == [("x", [None, None], "float32")]
