"""Reference outputs: run a model in its own framework, the yardstick a compiled build is validated against.

Keras and SavedModel run in TensorFlow (a SavedModel through its serving signature), TFLite in LiteRT,
ONNX in ONNX Runtime on the CPU, PyTorch programs (torch.export, TorchScript) in PyTorch: each format's default
reference. A backend may name another one it is
bit-exact with (BackendCaps.reference): "tflite-micro", TFLite Micro's own interpreter (the
`tflite-micro` wheel's host build of its reference kernels), for TFLite models. On a microcontroller
target a TFLite model that LiteRT refuses to load (some TFLM example models quantize per channel along
an axis LiteRT rejects: "quantized_dimension must be in range") falls back to TFLite Micro, and the
validation says so.
"""

from dataclasses import dataclass
from importlib import metadata
from typing import Callable

import numpy as np

from ..errors import BadInput, BuildError, EdgeyardError, reason, short_reason
from .info import ModelInfo

FRAMEWORKS = {"keras": "tensorflow", "savedmodel": "tensorflow", "tflite": "litert", "onnx": "onnxruntime",
              "torch-export": "torch", "torchscript": "torch"}
# References a backend may name instead of its format's default, and the format each one reads.
ALTERNATIVES = {"tflite-micro": "tflite"}
# The reference that runs a microcontroller target's model when the default one refuses to load it.
MICROCONTROLLER_FALLBACK = {"litert": "tflite-micro"}
# Distributions behind each framework; the first one installed gives the version.
DISTRIBUTIONS = {
    "tensorflow": {"tensorflow": ("tensorflow", "tensorflow-cpu"), "keras": ("keras",)},
    "litert": {"ai-edge-litert": ("ai-edge-litert",)},
    "onnxruntime": {"onnxruntime": ("onnxruntime",)},
    "tflite-micro": {"tflite-micro": ("tflite-micro",)},
    "torch": {"torch": ("torch",)},
}
# TFLite Micro runs in one fixed arena: this one fits any model a microcontroller could hold.
TFLM_RUN_ARENA_BYTES = 64 * 1024 * 1024

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]  # one sample (batch-pinned arrays) -> outputs


class ReferenceRefused(BuildError):
    """The reference framework would not load the model (as opposed to failing while running it)."""


@dataclass
class Reference:
    outputs: list[np.ndarray]  # each (N, *output shape)
    framework: str  # the one that ran
    note: str | None = None  # why it is not the one asked for


def reference_outputs(info: ModelInfo, inputs: list[np.ndarray], framework: str | None = None) -> list[np.ndarray]:
    """Run N samples through the model: inputs[i].shape == (N, *info.inputs[i].shape).

    The model runs sample by sample at its pinned shapes, in `framework` (default: its format's
    reference); outputs[k].shape == (N, *info.outputs[k].shape).
    """
    framework = framework or reference_name(info)
    inputs = _checked_inputs(info, inputs)
    try:
        run = _runner(info, framework)
    except EdgeyardError:
        raise
    except Exception as err:  # each framework raises its own types
        raise ReferenceRefused(f"{framework} could not load {info.path}: {reason(err)}.") from None
    try:
        per_sample = [run([x[n] for x in inputs]) for n in range(len(inputs[0]))]
    except Exception as err:
        raise BuildError(f"{framework} could not run {info.path}: {reason(err)}.") from None
    return [np.stack([sample[k] for sample in per_sample]) for k in range(len(info.outputs))]


def run_reference(info: ModelInfo, inputs: list[np.ndarray], framework: str, microcontroller: bool) -> Reference:
    """reference_outputs() in `framework`; on a microcontroller target, a model the framework refuses to load
    runs in its fallback (MICROCONTROLLER_FALLBACK) instead, and the Reference's note says why."""
    try:
        return Reference(reference_outputs(info, inputs, framework), framework)
    except ReferenceRefused as refused:
        fallback = MICROCONTROLLER_FALLBACK.get(framework) if microcontroller else None
        if fallback is None:
            raise
        outputs = reference_outputs(info, inputs, fallback)
        return Reference(outputs, fallback, f"{short_reason(str(refused), info.path)}; {fallback} ran it instead")


def reference_name(info: ModelInfo, preferred: str | None = None) -> str:
    """The reference that runs `info`: `preferred` (a backend's BackendCaps.reference) where it reads the model's
    format, else the format's own."""
    if preferred is not None and ALTERNATIVES.get(preferred, FRAMEWORKS.get(info.format)) == info.format:
        return preferred
    return FRAMEWORKS[info.format]


def framework_versions(framework: str) -> dict[str, str]:
    """Versions of a reference framework's packages ("tensorflow", "litert", "onnxruntime" or "tflite-micro"),
    installed ones only."""
    versions = {}
    for name, distributions in DISTRIBUTIONS[framework].items():
        for distribution in distributions:
            try:
                versions[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def _checked_inputs(info: ModelInfo, inputs: list[np.ndarray]) -> list[np.ndarray]:
    if len(inputs) != len(info.inputs):
        raise BadInput(f"{info.path} takes {len(info.inputs)} inputs but {len(inputs)} were given.")
    checked = []
    for array, tensor in zip(inputs, info.inputs):
        array = np.asarray(array)
        if array.shape[1:] != tensor.shape:
            raise BadInput(
                f"input {tensor.name!r} of {info.path} needs samples of shape {list(tensor.shape)}, "
                f"got an array of shape {list(array.shape)}."
            )
        # Widening or narrowing within a kind (float64 -> float32) is safe; float -> int8 needs quantizing first.
        if not np.can_cast(array.dtype, tensor.dtype, casting="same_kind"):
            raise BadInput(f"input {tensor.name!r} of {info.path} is {tensor.dtype}, got {array.dtype} data.")
        checked.append(array.astype(tensor.dtype, copy=False))
    if len({len(a) for a in checked}) > 1:
        raise BadInput(f"the inputs for {info.path} hold different numbers of samples.")
    return checked


def _runner(info: ModelInfo, framework: str) -> Runner:
    if framework == "tflite-micro":
        return _tflite_micro_runner(info)
    if framework == "litert":
        return _litert_runner(info)
    if framework == "onnxruntime":
        return _onnxruntime_runner(info)
    if framework == "torch":
        from .torch_model import reference_runner

        return reference_runner(info)
    return _tensorflow_runner(info)


def _tflite_micro_runner(info: ModelInfo) -> Runner:
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(info.path), arena_size=TFLM_RUN_ARENA_BYTES)

    def run(sample: list[np.ndarray]) -> list[np.ndarray]:
        for index, array in enumerate(sample):
            interpreter.set_input(array, index)
        interpreter.invoke()
        return [interpreter.get_output(k).reshape(tensor.shape).copy() for k, tensor in enumerate(info.outputs)]

    return run


def _litert_runner(info: ModelInfo) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(info.path))
    input_details = interpreter.get_input_details()
    for detail, tensor in zip(input_details, info.inputs):
        if tuple(detail["shape"]) != tensor.shape:
            interpreter.resize_tensor_input(detail["index"], list(tensor.shape), strict=True)
    interpreter.allocate_tensors()
    output_indices = [d["index"] for d in interpreter.get_output_details()]

    def run(sample: list[np.ndarray]) -> list[np.ndarray]:
        for detail, array in zip(input_details, sample):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        return [interpreter.get_tensor(i).copy() for i in output_indices]

    return run


def _onnxruntime_runner(info: ModelInfo) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
    input_names = [t.name for t in info.inputs]
    output_names = [t.name for t in info.outputs]

    def run(sample: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(output_names, dict(zip(input_names, sample)))

    return run


def _tensorflow_runner(info: ModelInfo) -> Runner:
    import tensorflow as tf

    from .tf_model import concrete_function

    function = concrete_function(info.path, info.format, info.sha256, tuple(info.inputs))

    def run(sample: list[np.ndarray]) -> list[np.ndarray]:
        # A pruned (SavedModel) function binds tensors only, not numpy arrays.
        return [result.numpy() for result in function(*(tf.constant(array) for array in sample))]

    return run
