"""The C API of a model compiled to static C (templates/static_model.h.j2), shared by the backends
that generate one: tvm's static driver and the kernels backend. A private module: it registers nothing."""

import math

import numpy as np

from ..codegen import c_identifier
from ..errors import BadInput
from ..model.info import TensorInfo
from ..paths import FIRMWARE_DIR

# The element types the header can name (templates/static_model.h.j2's c_types).
C_TYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")
# Files the generated sources sit beside (the harness, the firmware's and the kernel library's sources
# and headers) and the objects they compile to: a model named like one of them ("harness.onnx") gets
# another C name.
_SOURCE_STEMS = frozenset({"harness", "driver", "kernels", "weights", "runner",
                           *(p.stem for p in FIRMWARE_DIR.rglob("*.[ch]"))})
# Macros the header defines as <NAME>_INPUT_<suffix> (and _OUTPUT_): a tensor named "count" must not
# redefine <NAME>_INPUT_COUNT.
_IO_MACRO_SUFFIXES = ("COUNT", "BYTES")


def model_identifier(stem: str) -> str:
    """The C name of the model: its file stem, sanitized, unlike the sources it is compiled with; an
    identifier starting with "_" is reserved at file scope in C, so such a name gets a prefix."""
    name = c_identifier(stem, set(_SOURCE_STEMS))
    return f"model{name}" if name.startswith("_") else name


def c_string(text: str) -> str:
    """The body of a C string literal spelling `text` (UTF-8; anything unusual as octal escapes)."""
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\?' else f"\\{b:03o}" for b in text.encode())


def io_tensors(tensors: list[TensorInfo], alignment: int) -> tuple[list[dict], int]:
    """What the header says of each input (or output), packed back to back at aligned offsets; the total."""
    taken = set(_IO_MACRO_SUFFIXES)
    described, offset = [], 0
    for tensor in tensors:
        if tensor.dtype not in C_TYPES:
            raise BadInput(f"a static C model cannot pass tensor '{tensor.name}' of dtype {tensor.dtype} "
                           f"(supported: {', '.join(C_TYPES)}).")
        size = math.prod(tensor.shape) * np.dtype(tensor.dtype).itemsize
        described.append({
            "c_name": c_string(tensor.name),
            "macro": c_identifier(tensor.name.upper(), taken),
            "offset": offset,
            "bytes": size,
            "shape": list(tensor.shape),
            "elements": math.prod(tensor.shape),
            "dtype": tensor.dtype,
            "quant": None if not tensor.is_quantized else {"scale": repr(float(tensor.quant[0])),
                                                            "zero_point": int(tensor.quant[1])},
        })  # fmt: skip
        offset += -(-size // alignment) * alignment
    return described, max(offset, alignment)
