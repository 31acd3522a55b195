"""invoke check: the pre-flight names the board's limit and the estimate, and the op that stops a backend
with the backends that take it."""

from pathlib import Path

import pytest

from conftest import invoke
from toolchain.model.info import ModelInfo, Node, TensorInfo
from toolchain.pipeline.check import check, check_text
from toolchain.target.profile import load_target


def _float_model(params: int, side: int) -> ModelInfo:
    """A float CNN as a reader would describe it: one conv from a side x side x 3 input."""
    image = TensorInfo("image", (1, side, side, 3), "float32")
    # A Keras model: no backend reads it before conversion, so nothing here opens the file.
    return ModelInfo(Path("big.keras"), "keras", "", [image], [TensorInfo("logits", (1, 10), "float32")],
                     ops={"CONV_2D": 1, "FULLY_CONNECTED": 1}, params=params,
                     nodes=[Node("CONV_2D", ("image",), ("features",), (1, side, side, 16), 0),
                            Node("FULLY_CONNECTED", ("features",), ("logits",), (1, 10), 0)])


@pytest.mark.fast
def test_a_model_too_big_for_the_board_names_the_limit_and_the_estimate():
    board = load_target("nucleo-l4r5zi")
    result = check(board, _float_model(params=1_000_000, side=160))
    text = check_text(result)
    flash, ram = board.memory["flash_bytes"], board.memory["ram_bytes"]
    assert f"about 4,000,000 B and nucleo-l4r5zi has {flash:,} B of flash" in text
    assert "--quantize int8" in text
    activations = (160 * 160 * 3 + 160 * 160 * 16) * 4  # the conv's input and output, float32
    assert f"at least {activations:,} B and nucleo-l4r5zi has {ram:,} B of RAM" in text


@pytest.mark.fast
def test_a_model_that_fits_has_no_problem():
    result = check(load_target("nucleo-l4r5zi"), _float_model(params=1000, side=8))
    assert not [p for p in result.problems if "B of" in p]


def test_an_op_a_backend_lacks_names_the_op_and_the_backends_that_take_it(hybrid_tflite):
    result = invoke("check", "--target", "host", "--model", str(hybrid_tflite))
    assert result.returncode == 0, result.stderr
    problem = next(line for line in result.stdout.splitlines() if line.startswith("problem: backend tvm"))
    assert "FULLY_CONNECTED (dynamic-range quantized)" in problem and "litert" in problem and "--backend" in problem
