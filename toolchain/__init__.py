"""edgeyard: take a trained model to an embedded target.

The package is the engine; tasks.py is a thin Invoke face over it. Importing this package must stay
cheap: TensorFlow and TVM are imported inside the functions that need them.
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) would bury the one-line errors on stderr.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# ONNX Runtime 1.32 starts a telemetry uploader at import (a thread, a store under ~/.cache/Microsoft,
# network lookups) unless told not to.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import logging as _logging

# Converters log deprecation notes and progress through these loggers; errors still come through.
for _name in ("absl", "tf2onnx", "tensorflow"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
