"""Mixed precision by measured sensitivity (--quantize mixed): int8 everywhere but the layers int8 hurts most.

Two measurements per layer, both on the calibration data. LiteRT's QuantizationDebugger runs the int8 model beside
the float one and gives the error int8 adds at each quantized layer's output (relative to the output's own size,
and in quantization steps). That error alone misses a wide-range tensor: its few large values dominate the RMS
while the small ones that carry the class all round to one step, and the damage shows in the layers that read it.
So the ranking is by quantizing one layer at a time (the debugger's denylisted_nodes keep every other layer in
float): the error at the model's output with that layer alone in int8. The most sensitive layers are kept in float,
one more at a time, until the top-1 accuracy on labelled data is within the budget of the float model's. Every
model runs in LiteRT on this machine (pipeline/accuracy.py).
"""

import csv
import io
import warnings
from pathlib import Path

import numpy as np

from ..errors import BadInput, BuildError, reason
from ..model import ModelInfo
from ..pipeline.accuracy import labelled_split, top1_predictions

DEBUG_SAMPLES = 64  # calibration samples the debugger compares layer by layer: enough for a stable mean


def _relative_rmse(float_tensor: np.ndarray, quantized: np.ndarray, scale: float, zero_point: int) -> float:
    """RMS of the error int8 adds to a layer's output, over the RMS of the float output (0: exact)."""
    error = (quantized.astype(np.float64) - zero_point) * scale - float_tensor
    signal = float(np.sqrt(np.mean(np.square(float_tensor, dtype=np.float64))))
    return float(np.sqrt(np.mean(np.square(error)))) / signal if signal > 0 else 0.0


def mixed_tflite(source: ModelInfo, float_model: ModelInfo, out_dir: Path, calibration: np.ndarray,
                 eval_data: Path | None, budget: float, progress) -> tuple[ModelInfo, dict]:
    """(the mixed .tflite, the report's "mixed" section: the sensitivity table, the layers kept in float, size and
    accuracy of float, full int8 and mixed, and each step of the search)."""
    if eval_data is None or labelled_split(eval_data) is None:
        raise BadInput("--quantize mixed measures accuracy and needs labelled data: --eval-data FILE.npz (arrays x "
                       "and y, or x_test and y_test), or --data with labels.")
    from . import write_tflite

    progress(f"measuring each layer's sensitivity to int8 on {min(len(calibration), DEBUG_SAMPLES)} calibration "
             "samples (LiteRT's QuantizationDebugger, then one layer at a time in int8)")
    layers = _sensitivity(source, calibration)
    if not layers:
        raise BuildError(f"the QuantizationDebugger found no quantized layer in {source.path.name}.")
    _rank_one_at_a_time(source, float_model, calibration, layers, out_dir)
    float_predicted, labels = top1_predictions(float_model, eval_data)
    samples = len(labels)
    float_correct = int(np.sum(float_predicted == labels))

    def step(kept_float: int) -> tuple[ModelInfo, dict]:
        nodes = [layer["node"] for layer in layers[:kept_float]]
        flatbuffer = _converted(source, calibration, nodes)
        model = write_tflite(flatbuffer, Path(out_dir) / f"{source.stem}_mixed_{kept_float}.tflite", source)
        predicted, _ = top1_predictions(model, eval_data)
        correct = int(np.sum(predicted == labels))
        # Counted in samples, so that the comparison with the budget is exact (one sample of 450 is 0.22 points);
        # the predictions that differ from the float model's show what an unchanged accuracy can hide (swaps).
        return model, {"float_layers": kept_float, "accuracy": correct / samples,
                       "drop_samples": float_correct - correct,
                       "drop_points": round(100 * (float_correct - correct) / samples, 4),
                       "changed_predictions": int(np.sum(predicted != float_predicted)),
                       "bytes": model.path.stat().st_size}

    progress(f"searching for the fewest float layers within {budget} points of the float model's accuracy "
             f"({100 * float_correct / samples:.2f}% on {samples} samples of {eval_data.name})")
    # At most all layers but one: the debugger converts only a model with something quantized in it.
    steps, chosen = [], None
    for kept_float in range(len(layers)):
        model, measured = step(kept_float)
        steps.append(measured)
        progress(f"{kept_float} layer{'s' * (kept_float != 1)} in float: accuracy drop "
                 f"{measured['drop_points']:.2f} points ({measured['drop_samples']} of {samples} samples), "
                 f"{measured['changed_predictions']} predictions differ from the float model's")
        if 100 * measured["drop_samples"] <= budget * samples:
            chosen = model
            break
    if chosen is None:
        raise BuildError(f"--quantize mixed: even with every layer of {source.path.name} that int8 changes in float "
                         f"the accuracy drop is {steps[-1]['drop_points']} points, over the budget of {budget} (the "
                         "quantized input may be what costs it: check the calibration data's range).")
    kept = steps[-1]["float_layers"]
    for rank, layer in enumerate(layers):
        layer["kept_float"] = rank < kept
    mixed = write_tflite(chosen.path.read_bytes(), Path(out_dir) / f"{source.stem}_mixed.tflite", source)
    section = {
        "budget_points": budget,
        "metric": "output error alone: the relative RMSE of the model's outputs with only this layer in int8 (the "
                  "ranking); relative RMSE and RMSE in steps: the error int8 adds at the layer's own output "
                  "(QuantizationDebugger, every layer in int8)",
        "debug_samples": min(len(calibration), DEBUG_SAMPLES),
        "eval": {"data": f"{eval_data.name} ({labelled_split(eval_data)})", "samples": samples},
        "layers": layers,
        "float_layers": [layer["layer"] for layer in layers[:kept]],
        "int8_within_budget": kept == 0,  # full int8 met the budget: no layer needed float
        "steps": steps,
        "compared": {
            "float": {"bytes": float_model.path.stat().st_size, "accuracy": float_correct / samples},
            "int8": {"bytes": steps[0]["bytes"], "accuracy": steps[0]["accuracy"],
                     "drop_points": steps[0]["drop_points"], "changed_predictions": steps[0]["changed_predictions"]},
            "mixed": {"bytes": mixed.path.stat().st_size, "accuracy": steps[-1]["accuracy"],
                      "drop_points": steps[-1]["drop_points"],
                      "changed_predictions": steps[-1]["changed_predictions"]},
        },
    }
    return mixed, section


def _debugger(source: ModelInfo, calibration: np.ndarray, denylisted: list[str]):
    """LiteRT's QuantizationDebugger on the int8 converter (float inputs and outputs), `denylisted` nodes in float."""
    import tensorflow as tf

    from . import tflite_converter

    samples = calibration[:DEBUG_SAMPLES]
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"relative_rmse": _relative_rmse}, denylisted_nodes=denylisted or None)
    return tf.lite.experimental.QuantizationDebugger(
        converter=tflite_converter(source, "mixed", calibration), debug_dataset=lambda: ([s] for s in samples),
        debug_options=options)


def _sensitivity(source: ModelInfo, calibration: np.ndarray) -> list[dict]:
    """Every quantized layer's output, in the model's order: {layer, node, op, relative_rmse, rmse_steps}."""
    try:
        with warnings.catch_warnings():  # the debugger runs tf.lite.Interpreter, deprecated, and warns so
            warnings.simplefilter("ignore")
            debugger = _debugger(source, calibration, [])
            debugger.run()
            dump = io.StringIO()
            debugger.layer_statistics_dump(dump)
    except Exception as err:  # the converter and the debugger raise many types
        raise BuildError(f"measuring the int8 sensitivity of {source.path.name} failed: {reason(err)}.") from None
    layers = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        layers.append({
            # The tensor's name lists the TF ops fused into it; the first names the layer.
            "layer": row["tensor_name"].split(";")[0],
            "node": row["tensor_name"],  # what denylisted_nodes takes
            "op": row["op_name"],
            "relative_rmse": round(float(row["relative_rmse"]), 6),
            # TF's own measure: the error in quantization steps (0.29 is rounding alone)
            "rmse_steps": round(float(np.sqrt(float(row["mean_squared_error"]))) / scale, 4) if scale else None,
        })
    return layers


def _rank_one_at_a_time(source: ModelInfo, float_model: ModelInfo, calibration: np.ndarray, layers: list[dict],
                        out_dir: Path) -> None:
    """Add each layer's "output_error_alone" (the model's outputs with only that layer in int8, their RMS error
    over the float model's RMS) and sort `layers` by it, most sensitive first."""
    from ..model.reference import reference_outputs
    from . import write_tflite

    samples = calibration[:DEBUG_SAMPLES]
    expected = reference_outputs(float_model, [samples])
    for index, layer in enumerate(layers):
        others = [other["node"] for other in layers if other is not layer]
        alone = write_tflite(_converted(source, calibration, others),
                             Path(out_dir) / f"{source.stem}_int8_layer_{index}.tflite", source)
        error = sum(float(np.sum(np.square(got - want, dtype=np.float64)))
                    for got, want in zip(reference_outputs(alone, [samples]), expected))
        signal = sum(float(np.sum(np.square(want, dtype=np.float64))) for want in expected)
        layer["output_error_alone"] = round(float(np.sqrt(error / signal)) if signal > 0 else 0.0, 6)
    layers.sort(key=lambda layer: -layer["output_error_alone"])


def _converted(source: ModelInfo, calibration: np.ndarray, denylisted: list[str]) -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _debugger(source, calibration, denylisted).get_nondebug_quantized_model()
    except Exception as err:
        raise BuildError(f"quantizing {source.path.name} with {len(denylisted)} layers in float failed: "
                         f"{reason(err)}.") from None
