"""The litert backend: the .tflite and a LiteRT runner script."""

from . import register
from ._python_runtime import PythonRuntimeBackend

register(PythonRuntimeBackend(
    name="litert", runtime_label="LiteRT", format="tflite", package="ai-edge-litert",
    # Its reference kernels run 16-bit activations with 8-bit weights (XNNPACK leaves those ops to them).
    int16_activations=True,
    encrypts=True,  # loads the model from bytes: decrypted in memory (--encrypt)
))
