"""A TFLite model's main graph as the kernels backend compiles it: tensors with their quantization
and constant data, operators with their parsed options, in execution order."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite

from ...errors import BadInput, reason
from ...model.tflite_reader import DTYPE_NAMES, op_name

NUMPY_DTYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
                "float32": np.float32}
# Options table of each operator the backend lowers (tflite.<name> classes).
OPTIONS = {
    "CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
    "FULLY_CONNECTED": tflite.FullyConnectedOptions, "ADD": tflite.AddOptions, "MUL": tflite.MulOptions,
    "AVERAGE_POOL_2D": tflite.Pool2DOptions, "MAX_POOL_2D": tflite.Pool2DOptions, "SOFTMAX": tflite.SoftmaxOptions,
    "CONCATENATION": tflite.ConcatenationOptions, "MEAN": tflite.ReducerOptions,
    "STRIDED_SLICE": tflite.StridedSliceOptions,
}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scales: np.ndarray | None = None  # float32, one per channel or one for the tensor
    zero_points: np.ndarray | None = None
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constant tensors (weights, biases, shapes)

    @property
    def scale(self) -> float:
        return float(self.scales[0])

    @property
    def zero_point(self) -> int:
        return int(self.zero_points[0]) if self.zero_points is not None and len(self.zero_points) else 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(NUMPY_DTYPES[self.dtype]).itemsize

    @property
    def quantized(self) -> bool:
        return self.scales is not None and len(self.scales) > 0


@dataclass
class Operator:
    index: int
    op: str  # "CONV_2D"
    inputs: list[int]  # tensor indices; -1 for an absent optional operand
    outputs: list[int]
    options: object | None = None  # the tflite.<Op>Options table, parsed


@dataclass
class Graph:
    path: Path
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    op_counts: dict[str, int] = field(default_factory=dict)

    def tensor(self, index: int) -> Tensor | None:
        return self.tensors[index] if index >= 0 else None


def read_graph(path: Path) -> Graph:
    buf = path.read_bytes()
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() != 1:
            raise BadInput(f"{path}: the kernels backend compiles models with one graph; this one has "
                           f"{model.SubgraphsLength()} (control flow).")
        graph = model.Subgraphs(0)
        tensors = [_tensor(model, graph, i) for i in range(graph.TensorsLength())]
        operators = []
        for o in range(graph.OperatorsLength()):
            operator = graph.Operators(o)
            name = op_name(model, operator)
            operators.append(Operator(o, name, [int(i) for i in operator.InputsAsNumpy()] if operator.InputsLength() else [],
                                      [int(i) for i in operator.OutputsAsNumpy()] if operator.OutputsLength() else [],
                                      _options(operator, name)))
        inputs = [int(graph.Inputs(i)) for i in range(graph.InputsLength())]
        outputs = [int(graph.Outputs(i)) for i in range(graph.OutputsLength())]
    except (AttributeError, IndexError, ValueError, TypeError) as err:
        raise BadInput(f"{path} is a damaged TFLite model ({reason(err)}).") from None
    counts: dict[str, int] = {}
    for operator in operators:
        counts[operator.op] = counts.get(operator.op, 0) + 1
    return Graph(path, tensors, operators, inputs, outputs, counts)


def _tensor(model, graph, index: int) -> Tensor:
    raw = graph.Tensors(index)
    dtype = DTYPE_NAMES.get(raw.Type(), str(raw.Type()))
    shape = tuple(int(d) for d in raw.ShapeAsNumpy()) if raw.ShapeLength() else ()
    tensor = Tensor(index, raw.Name().decode("utf-8", "replace"), shape, dtype)
    quant = raw.Quantization()
    if quant is not None and quant.ScaleLength():
        tensor.scales = quant.ScaleAsNumpy().astype(np.float32)
        tensor.zero_points = quant.ZeroPointAsNumpy().astype(np.int64) if quant.ZeroPointLength() else np.zeros(1, np.int64)
        tensor.quantized_dimension = int(quant.QuantizedDimension())
    buffer = model.Buffers(raw.Buffer())
    if buffer is not None and buffer.DataLength() and dtype in NUMPY_DTYPES:
        tensor.data = buffer.DataAsNumpy().view(NUMPY_DTYPES[dtype]).reshape(shape)
    return tensor


def _options(operator, name: str):
    options_class = OPTIONS.get(name)
    table = operator.BuiltinOptions()
    if options_class is None or table is None:
        return None
    options = options_class()
    options.Init(table.Bytes, table.Pos)
    return options
