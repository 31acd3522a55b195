"""The onnxruntime backend: the .onnx and an ONNX Runtime runner script."""

from . import register
from ._python_runtime import PythonRuntimeBackend

register(PythonRuntimeBackend(
    name="onnxruntime", runtime_label="ONNX Runtime", format="onnx", package="onnxruntime",
    # ONNX Runtime 1.32 would start a telemetry uploader on the board (a thread, network lookups).
    env=(("ORT_DISABLE_TELEMETRY", "1"),),
    encrypts=True,  # loads the model from bytes: decrypted in memory (--encrypt)
))
