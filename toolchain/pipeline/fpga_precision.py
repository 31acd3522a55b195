"""--precision auto: an hls4ml build's per-layer ap_fixed types, chosen by measurement under --accuracy-budget.

Integer bits are not searched: each layer gets the bits that hold the largest magnitude of its weights, biases and
outputs (Keras, on the calibration samples) and a sign bit, and its types saturate (AP_SAT) for what the samples
did not show. Fraction bits are searched. Every layer starts at START_WIDTH bits in all (more when its range needs
them); each step compiles hls4ml's bit-accurate C simulation of the design (hls4ml's trace(): g++, the same C++ as
the bundle's), measures the top-1 accuracy on the evaluation data with it, and each layer's error against the
Keras model's own output of that layer on the calibration samples (as hls4ml's profiling compares them). While the
accuracy drop is over the budget, the layer that adds the most error (its output's error less its input's) gains
WIDEN_BITS fraction bits. The error is a relative RMSE per channel, averaged over the channels: a wide-range
channel would otherwise hide the narrow ones it shares a type with.

One C simulation per step: seconds for a small dense model, minutes for a convolutional one in io_stream.
"""

import contextlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backends.base import ReportSection
from ..errors import BadInput, BuildError
from ..model import ModelInfo, model_sha256
from ..target.profile import Target
from ..target.settings import with_settings

START_WIDTH = 8  # bits of every layer's first type (integer bits from its range, the rest fraction)
WIDEN_BITS = 4  # fraction bits a step adds to the layer that adds the most error
MAX_WIDTH = 32  # no layer is widened past this
MAX_DESIGNS = 24  # C simulations at most before the search gives up
TRACE_SAMPLES = 64  # calibration samples whose per-layer outputs are compared
RANDOM_SAMPLES = 256  # seeded random inputs when no data is given


@dataclass(frozen=True)
class Search:
    """What --precision auto measures against, settled from the options before any heavy work."""

    budget: float  # the accuracy drop allowed, in percentage points
    eval_data: Path | None  # --eval-data; None: the build's dataset
    calibration: Path | None  # --calibration; None: the build's dataset

    def cache_key(self) -> dict:
        return {"budget": self.budget, "eval_data": model_sha256(self.eval_data) if self.eval_data else None,
                "calibration": model_sha256(self.calibration) if self.calibration else None}


def plan(target: Target, backend_name: str, budget, eval_data: Path | None, calibration: Path | None) -> Search:
    """--precision auto's settings, or BadInput for options that do not fit (checked before any heavy work)."""
    from ..convert.quantize import DEFAULT_ACCURACY_BUDGET, budget_points

    if target.fpga is None or backend_name != "hls4ml":
        raise BadInput(f"--precision auto chooses the ap_fixed types of an hls4ml build for an FPGA target, and "
                       f"target '{target.name}' with backend '{backend_name}' is none.")
    for flag, path in (("--eval-data", eval_data), ("--calibration", calibration)):
        if path is not None and not Path(path).is_file():
            raise BadInput(f"{path}: {flag} file not found.")
    return Search(budget_points(DEFAULT_ACCURACY_BUDGET if budget is None else budget),
                  Path(eval_data) if eval_data else None, Path(calibration) if calibration else None)


def integer_bits(largest: float) -> int:
    """Integer bits (the sign's included) of a signed fixed-point type that holds +-largest: 1.5 needs 2."""
    return max(1, math.floor(math.log2(largest)) + 2) if largest > 0 else 1


def fixed_type(width: int, integer: int) -> str:
    return f"ap_fixed<{width},{integer},AP_TRN,AP_SAT>"


def channel_error(got: np.ndarray, want: np.ndarray) -> float:
    """Relative RMSE of `got` against `want` per channel (the last axis), averaged over the channels that carry a
    signal (0: exact)."""
    got = got.reshape(-1, want.shape[-1]).astype(np.float64)
    want = want.reshape(-1, want.shape[-1]).astype(np.float64)
    signal = np.sqrt(np.mean(np.square(want), axis=0))
    error = np.sqrt(np.mean(np.square(got - want), axis=0))
    live = signal > 0
    return float(np.mean(error[live] / signal[live])) if live.any() else 0.0


@dataclass
class Chosen:
    target: Target  # the build's target with the chosen types (fpga.precision and fpga.layer_precision)
    section: ReportSection  # report.json's "fpga_precision"


def choose_widths(model: ModelInfo, target: Target, search: Search, dataset: Path | None, workdir: Path,
                  progress) -> Chosen:
    """The narrowest per-layer types whose C simulation keeps the accuracy drop within the budget (module doc)."""
    from ..backends.hls4ml import convert_keras, hls_config
    from ..convert.quantize import load_calibration
    from ..model.tf_model import load_keras
    from .accuracy import labelled_split
    from .validate import make_inputs

    keras_model = load_keras(str(model.path), model.sha256)
    if int(np.prod(model.outputs[0].shape)) < 2 or len(model.inputs) != 1:
        raise BadInput(f"{model.path}: --precision auto measures top-1 accuracy, and needs a model with one input "
                       "and class scores as its first output.")
    eval_data = search.eval_data or dataset
    labelled = eval_data is not None and labelled_split(eval_data) is not None
    inputs = make_inputs(model, 10**9 if eval_data else RANDOM_SAMPLES, eval_data)
    sample_shape = tuple(model.inputs[0].shape[1:])  # Keras takes a batch of samples; the model's shape has one
    x_eval = inputs.tensors[0].reshape(-1, *sample_shape).astype(np.float32)
    float_scores = keras_model.predict(x_eval, verbose=0)
    float_top1 = float_scores.reshape(len(x_eval), -1).argmax(axis=1)
    if labelled:
        from ..model.data import class_indices

        labels, judged = class_indices(inputs.labels), f"top-1 accuracy on {inputs.source}"
    else:
        labels, judged = float_top1, f"agreement with the float model's top-1 on {inputs.source} (no labels)"
    calibration_file = search.calibration or dataset
    if calibration_file is not None:
        calibration = load_calibration(calibration_file, model, TRACE_SAMPLES)
        x_trace, trace_source = calibration.inputs, calibration.source
    else:
        x_trace, trace_source = x_eval[:TRACE_SAMPLES], inputs.source
    x_trace = x_trace.reshape(-1, *sample_shape).astype(np.float32)

    layers = list(hls_config(keras_model, target.fpga)["LayerName"])
    pinned = dict(target.fpga.get("layer_precision") or {})
    expected = _keras_layer_outputs(keras_model, x_trace)
    largest = _largest_values(keras_model, expected, x_trace, layers)
    integer = {name: integer_bits(largest[name]) for name in layers}
    width = {name: max(START_WIDTH, integer[name] + 1) for name in layers if name not in pinned}
    start = dict(width)
    float_correct = int(np.sum(float_top1 == labels))
    samples = len(labels)
    progress(f"choosing per-layer ap_fixed widths within {search.budget} points of the float model's "
             f"{judged} ({100 * float_correct / samples:.2f}%): one C simulation per step")

    def types() -> dict[str, str]:
        return {**{name: fixed_type(bits, integer[name]) for name, bits in width.items()}, **pinned}

    steps, errors = [], {}
    for design in range(1, MAX_DESIGNS + 1):
        chosen = types()
        widest = max(chosen.values(), key=_fraction)
        fpga = {**target.fpga, "precision": widest, "layer_precision": chosen}
        scores, traced, hls_model = _simulate(convert_keras, keras_model, model, fpga, workdir / f"design{design}",
                                              x_eval, x_trace)
        predicted = scores.reshape(len(x_eval), -1).argmax(axis=1)
        correct = int(np.sum(predicted == labels))
        errors = _layer_errors(hls_model, traced, expected, x_trace, chosen, keras_model.inputs[0].name)
        step = {"design": design, "types": chosen, "accuracy": correct / samples,
                "drop_samples": float_correct - correct,
                "drop_points": round(100 * (float_correct - correct) / samples, 4),
                "changed_predictions": int(np.sum(predicted != float_top1)), "widened": None}
        steps.append(step)
        if 100 * step["drop_samples"] <= search.budget * samples:
            progress(f"design {design}: accuracy drop {step['drop_points']:.2f} points, within the budget")
            break
        candidates = [name for name in width if width[name] < MAX_WIDTH and name in errors]
        if not candidates or design == MAX_DESIGNS:
            raise BuildError(f"--precision auto: no design of {model.path.name} within {search.budget} points after "
                             f"{design} C simulations (the last: {step['drop_points']:.2f} points); give a larger "
                             "--accuracy-budget or set the types with --precision and --layer-precision.")
        worst = max(candidates, key=lambda name: errors[name]["added"])
        width[worst] = min(MAX_WIDTH, width[worst] + WIDEN_BITS)
        step["widened"] = worst
        progress(f"design {design}: accuracy drop {step['drop_points']:.2f} points ({step['drop_samples']} of "
                 f"{samples} samples); widening {worst} to {fixed_type(width[worst], integer[worst])}")
    final = steps[-1]
    table = [{
        "layer": name,
        "largest_value": round(largest[name], 6),
        "type": final["types"][name],
        "start_type": fixed_type(start[name], integer[name]) if name in start else final["types"][name],
        "pinned": name in pinned,
        "error": errors.get(name, {}).get("error"),
        "added_error": errors.get(name, {}).get("added"),
    } for name in layers]  # fmt: skip
    data = {
        "budget_points": search.budget,
        "measure": judged,
        "samples": samples,
        "trace": {"source": trace_source, "samples": len(x_trace)},
        "start_width": START_WIDTH,
        "widen_bits": WIDEN_BITS,
        "float_accuracy": float_correct / samples,
        "accuracy": final["accuracy"],
        "drop_points": final["drop_points"],
        "changed_predictions": final["changed_predictions"],
        "c_simulations": len(steps),
        "layers": table,
        "steps": steps,
    }
    widened = sum(1 for row in table if row["type"] != row["start_type"])
    line = (f"precision auto: {widened} of {len(start)} layers widened from {START_WIDTH} bits; accuracy "
            f"{100 * final['accuracy']:.2f}% (float {100 * data['float_accuracy']:.2f}%, drop "
            f"{final['drop_points']:.2f} points, budget {search.budget}) on {samples} samples; "
            f"{len(steps)} C simulations")
    chosen = final["types"]
    settings = {"fpga.precision": max(chosen.values(), key=_fraction),
                **{f"fpga.layer_precision.{name}": kind for name, kind in chosen.items()}}
    return Chosen(with_settings(target, settings), ReportSection("fpga_precision", data, line))


def _fraction(kind: str) -> int:
    from ..backends.hls4ml import fraction_bits

    return fraction_bits(kind)


def _simulate(convert_keras, keras_model, model: ModelInfo, fpga: dict, project_dir: Path, x_eval: np.ndarray,
              x_trace: np.ndarray):
    """(the C simulation's scores on x_eval, its per-layer outputs on x_trace, hls4ml's model), one g++ build."""
    messages = io.StringIO()
    with contextlib.redirect_stdout(messages), contextlib.redirect_stderr(messages), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hls_model = convert_keras(keras_model, model, fpga, project_dir, trace=True)
        try:
            _, traced = hls_model.trace(np.ascontiguousarray(x_trace.reshape(len(x_trace), -1)))
            scores = hls_model.predict(np.ascontiguousarray(x_eval.reshape(len(x_eval), -1)))
        except Exception as err:  # hls4ml raises bare Exceptions when g++ fails
            raise BuildError(f"hls4ml's C simulation of {model.path.name} failed: {err}; its output: "
                             f"{messages.getvalue()[-2000:]}") from None
    return np.asarray(scores), traced, hls_model


def _keras_layer_outputs(keras_model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every Keras layer's output on x under hls4ml's layer names: a layer with a fused activation gives its
    output before the activation under its own name and after it as "<name>_<activation>" (as hls4ml's
    profiling does)."""
    import keras

    layers = [layer for layer in keras_model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(inputs=keras_model.inputs, outputs=[layer.output for layer in layers])
    outputs = {}
    for layer, value in zip(layers, _as_list(probe.predict(x, verbose=0))):
        name = layer.get_config().get("activation")  # a fused activation's name (Dense, Conv2D, ...)
        if not isinstance(name, str) or name == "linear" or isinstance(layer, keras.layers.Activation):
            outputs[layer.name] = value
            continue
        outputs[f"{layer.name}_{name}"] = value
        activation, layer.activation = layer.activation, None  # the output before the activation; restored at once
        try:
            single = keras.Model(inputs=keras_model.inputs, outputs=layer.output)
            outputs[layer.name] = single.predict(x, verbose=0)
        finally:
            layer.activation = activation
    return outputs


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _largest_values(keras_model, expected: dict, x: np.ndarray, layers: list[str]) -> dict[str, float]:
    """Each hls4ml layer's largest magnitude: its Keras weights and biases, and its outputs on the samples (the
    model's input for the input layer; a layer Keras does not show, the largest of all)."""
    weights = {layer.name: max((float(np.max(np.abs(w))) for w in layer.get_weights() if w.size), default=0.0)
               for layer in keras_model.layers}
    known = {name: float(np.max(np.abs(value))) for name, value in expected.items()}
    for name in layers:
        if name not in known and name in {tensor.name for tensor in keras_model.inputs}:
            known[name] = float(np.max(np.abs(x)))
    everything = max(known.values(), default=1.0)
    return {name: max(known.get(name, everything), weights.get(name, 0.0)) for name in layers}


def _layer_errors(hls_model, traced: dict, expected: dict, x: np.ndarray, types: dict[str, str],
                  input_name: str) -> dict[str, dict]:
    """{layer: {error, added}}: the C simulation's output of each traced layer against Keras's (channel_error), and
    that error less the largest of its inputs' (the input layer's: its inputs converted to its type)."""
    from ..backends.hls4ml import fraction_bits

    errors = {}
    if input_name in types:  # the input layer: the conversion of the float input to its type, as the C bridge does
        step = 2.0 ** -fraction_bits(types[input_name])
        integer = int(types[input_name].split(",")[1])
        top = 2.0 ** (integer - 1)
        converted = np.clip(np.floor(x / step) * step, -top, top - step)
        error = channel_error(converted, x.reshape(converted.shape))
        errors[input_name] = {"error": round(error, 6), "added": error}
    graph = {layer.name: layer for layer in hls_model.get_layers()}
    for name in types:
        if name not in traced or name not in expected or name not in graph:
            continue
        error = channel_error(np.asarray(traced[name]), np.asarray(expected[name]).reshape(np.asarray(traced[name]).shape))
        before = max((errors[source]["error"] for source in graph[name].inputs if source in errors), default=0.0)
        errors[name] = {"error": round(error, 6), "added": error - before}
    return errors
