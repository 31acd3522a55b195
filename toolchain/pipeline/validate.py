"""Validation: the built artifact against the model's own framework, on the same inputs.

Quantized outputs (int8/uint8/int16) are compared in their integer domain, so the error is in LSB
and the tolerance is 1 LSB; float outputs dequantized from such a grid (ONNX QDQ) may differ by one
step of it. Float outputs are compared with an absolute tolerance scaled by the
reference's magnitude, so logits and probabilities are judged alike.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..model.data import eval_split, load_npz
from ..model.info import ModelInfo, TensorInfo
from ..options import DEFAULT_SAMPLES

# Float tolerance: |artifact - reference| <= FLOAT_TOLERANCE[dtype] * max(1, max |reference|).
FLOAT_TOLERANCE = {"float32": 1e-4, "float16": 1e-2}
QUANTIZED_TOLERANCE_LSB = 1


@dataclass
class Inputs:
    tensors: list[np.ndarray]  # each (samples, *input shape)
    labels: np.ndarray | None  # class labels when the inputs came from a labelled dataset
    source: str  # "dataset <file>" or "random (seed N)"


def _quantize(x: np.ndarray, spec: TensorInfo) -> np.ndarray:
    scale, zero_point = spec.quant
    info = np.iinfo(spec.dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(spec.dtype)


def _random_tensor(rng: np.random.Generator, spec: TensorInfo, samples: int) -> np.ndarray:
    shape = (samples, *spec.shape)
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        # Narrow integer tensors carry quantized values: cover their whole range. Wide ones are
        # usually indices: keep them small and valid.
        low, high = (info.min, info.max) if dtype.itemsize == 1 else (0, 9)
        return rng.integers(low, high, size=shape, endpoint=True, dtype=dtype)
    if dtype.kind == "b":
        return rng.integers(0, 1, size=shape, endpoint=True).astype(bool)
    raise BadInput(f"cannot make test inputs for input '{spec.name}' of dtype {spec.dtype}.")


def make_inputs(model: ModelInfo, samples: int = DEFAULT_SAMPLES, dataset: Path | None = None,
                seed: int = 0) -> Inputs:
    """Test inputs: the first `samples` of the dataset's test split when given, else seeded random."""
    if dataset is None:
        rng = np.random.default_rng(seed)
        return Inputs([_random_tensor(rng, spec, samples) for spec in model.inputs], None, f"random (seed {seed})")
    data = load_npz(dataset)
    split = eval_split(data)
    if split is None:
        raise BadInput(f"{dataset}: has no 'x_test' or 'x' array.")
    if len(model.inputs) != 1:
        raise BadInput(f"{dataset}: a dataset file feeds single-input models, and this model has {len(model.inputs)}.")
    spec = model.inputs[0]
    x_key, y_key = split
    x = data[x_key][:samples]
    try:
        x = x.reshape((x.shape[0], *spec.shape))
    except ValueError:
        raise BadInput(f"{dataset}: samples of shape {list(data[x_key].shape[1:])} do not fit input "
                       f"'{spec.name}' of shape {list(spec.shape)}.") from None
    x = _quantize(x, spec) if spec.is_quantized and x.dtype.kind == "f" else x.astype(spec.dtype)
    labels = data[y_key][: x.shape[0]] if y_key in data else None
    return Inputs([x], labels, f"dataset {dataset.name} ({x_key})")


def _top1(outputs: np.ndarray) -> np.ndarray:
    return outputs.reshape(outputs.shape[0], -1).argmax(axis=1)


def compare(outputs: list[np.ndarray], reference: list[np.ndarray], specs: list[TensorInfo],
            labels: np.ndarray | None = None, float_tolerance: dict | None = None) -> dict:
    """The validation section of the report: errors per output, top-1 agreement, accuracy when labelled.

    `float_tolerance` (a bundle manifest's "tolerance", {dtype: factor}) replaces FLOAT_TOLERANCE for
    builds that compute in lower precision by design, e.g. an FPGA design's fixed-point types.
    """
    per_output = []
    passed = True
    for got, want, spec in zip(outputs, reference, specs):
        if spec.is_quantized:
            error = float(np.max(np.abs(got.astype(np.int64) - want.astype(np.int64)), initial=0))
            tolerance, unit = float(QUANTIZED_TOLERANCE_LSB), "LSB"
        else:
            want = want.astype(np.float64)
            error = float(np.max(np.abs(got.astype(np.float64) - want), initial=0))
            scale = max(1.0, float(np.max(np.abs(want), initial=0)))
            tolerance, unit = (float_tolerance or FLOAT_TOLERANCE).get(spec.dtype, 1e-4) * scale, "abs"
            if spec.quant is not None:  # dequantized from an integer grid: 1 LSB there, plus float rounding
                tolerance += QUANTIZED_TOLERANCE_LSB * spec.quant[0]
        ok = bool(error <= tolerance and np.all(np.isfinite(got.astype(np.float64))))
        passed &= ok
        per_output.append({"name": spec.name, "max_abs_error": error, "tolerance": tolerance, "unit": unit,
                           "passed": ok})
    first = outputs[0]
    classifies = first.reshape(first.shape[0], -1).shape[1] > 1
    result = {
        "passed": passed,
        "ran": True,
        "status": "passed" if passed else "failed",
        "max_abs_error": max(o["max_abs_error"] for o in per_output),
        "top1_agreement": float(np.mean(_top1(first) == _top1(reference[0]))) if classifies else None,
        "samples": int(first.shape[0]),
        "outputs": per_output,
    }
    if labels is not None and classifies:
        result["accuracy"] = float(np.mean(_top1(first) == labels.reshape(-1)))
        result["reference_accuracy"] = float(np.mean(_top1(reference[0]) == labels.reshape(-1)))
    return result


NOT_RUN = "built, not run on target"


def not_run(reason: str, samples: int) -> dict:
    """The validation section for a bundle that could not run where the target would run it."""
    return {"passed": False, "ran": False, "status": f"{NOT_RUN}: {reason}", "not_run_reason": reason, "max_abs_error": None,
            "top1_agreement": None, "samples": samples, "outputs": []}


def failure_summary(validation: dict) -> str:
    worst = [o for o in validation["outputs"] if not o["passed"]]
    return "; ".join(f"output '{o['name']}' is off by {o['max_abs_error']:.6g} {o['unit']} "
                     f"(tolerance {o['tolerance']:.6g})" for o in worst)
