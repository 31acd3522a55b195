"""What ingest learns about a model: plain data every later stage reads."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # static; a dynamic batch is pinned to 1
    dtype: str  # numpy dtype name: float32, int8, uint8, int32, ...
    # (scale, zero_point) of an affine-quantized tensor; on a float tensor, the grid it was dequantized from
    # (an ONNX QDQ model's DequantizeLinear output): its values are zero_point-relative multiples of scale.
    quant: tuple[float, int] | None = None

    @property
    def is_quantized(self) -> bool:
        return self.quant is not None and self.dtype in ("int8", "uint8", "int16")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "quant": None if self.quant is None else {"scale": self.quant[0], "zero_point": self.quant[1]},
        }


@dataclass(frozen=True)
class Node:
    """One operator of the model's main graph, for the report's graph drawing: its op, the tensors it reads
    and writes (by name), its first output's shape and its multiply-accumulates."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    shape: tuple[int, ...] | None
    macs: int

    def to_dict(self) -> dict:
        return {"op": self.op, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "shape": None if self.shape is None else list(self.shape), "macs": self.macs}


@dataclass
class ModelInfo:
    path: Path
    format: str  # "keras" (.keras/.h5), "savedmodel", "tflite", "onnx", "torch-export" (.pt2), "torchscript"
    sha256: str  # of the file, or of a SavedModel folder's files in path order
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    ops: dict[str, int] = field(default_factory=dict)  # op name -> count, e.g. {"CONV_2D": 2}
    params: int = 0  # trainable and constant weights, in elements
    macs: int = 0  # multiply-accumulates per inference (conv, depthwise, dense, matmul)
    # What loading changed to make the model usable (pinned dimensions, a fallback loader), one line each.
    repairs: list[str] = field(default_factory=list)
    # The main graph's operators in order (TFLite and ONNX readers; empty for Keras/SavedModel): report.json `graph`.
    nodes: list[Node] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return self.path.name.split(".")[0] if self.path.is_file() else self.path.name

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.format,
            "sha256": self.sha256,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "ops": dict(self.ops),
            "params": self.params,
            "macs": self.macs,
            "repairs": list(self.repairs),
        }
