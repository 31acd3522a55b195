"""Each TFLite operator -> one call of a kernel in firmware/kernels/, with every parameter the
kernel needs computed here, at build time: requantization multipliers and shifts (TFLite Micro's,
fixedpoint.py), padding, activation bounds, weights packed for the SXTB16 + SMLAD loops, biases
with the input offset folded in where the kernel can use it, lookup tables.

An operator this module has no lowering for, or one outside the forms the kernels compute, stops
the build with a sentence naming it (`--backend auto` then falls back to the next backend).
"""

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tflite.Padding import Padding

from ...errors import BuildError
from . import fixedpoint as fx
from .graph import NUMPY_DTYPES, Graph, Operator, Tensor

# Accumulators are int32. The fast requantization shifts them left by pre_shift first (ek_arith.h);
# a layer where that could overflow takes the exact 64-bit path.
ACCUMULATOR_LIMIT = 1 << 31
CONSTANT_ALIGNMENT = 4


class Unsupported(BuildError):
    """An operator the kernels cannot compute, named with its position."""


@dataclass
class Constant:
    symbol: str
    data: bytes
    c_type: str  # of the elements, for the driver's extern declaration
    count: int


@dataclass
class Arg:
    """One argument of a kernel call: the layer's parameter block, a tensor, its scratch buffer, a number,
    a constant array, or a list of tensors (pointers)."""

    kind: str  # "params" | "tensor" | "scratch" | "int" | "float" | "constant" | "tensors"
    tensor: int = -1
    c_type: str = "int8_t"
    const: bool = False
    value: object = None


@dataclass
class Layer:
    index: int  # the operator's position in the graph
    op: str
    name: str  # its first output's tensor name
    kernel: str | None  # C function; None for an alias (RESHAPE): no code
    inputs: list[int]  # activation tensors read
    outputs: list[int]  # tensors written
    params_type: str | None = None
    params: dict = field(default_factory=dict)
    args: list[Arg] = field(default_factory=list)
    constants: list[Constant] = field(default_factory=list)
    scratch_bytes: int = 0
    macs: int = 0
    in_place: bool = False  # elementwise: the output may take the storage of an input that dies here


def lower(graph: Graph) -> list[Layer]:
    layers = []
    for operator in graph.operators:
        lowering = LOWERINGS.get(operator.op)
        if lowering is None:
            raise Unsupported(f"{graph.path.name}: the kernels backend has no {operator.op} kernel "
                              f"(operator {operator.index}); supported: {', '.join(sorted(LOWERINGS))}.")
        layers.append(lowering(graph, operator))
    return layers


# ---------- helpers ----------


def _fail(graph: Graph, operator: Operator, why: str) -> Unsupported:
    return Unsupported(f"{graph.path.name}: operator {operator.index} ({operator.op}) {why}; the kernels backend "
                       f"cannot compute it.")


def _int8(graph: Graph, operator: Operator, *tensors: Tensor) -> None:
    for tensor in tensors:
        if tensor.dtype != "int8" or not tensor.quantized:
            raise _fail(graph, operator, f"has a {tensor.dtype} tensor '{tensor.name}' (int8 quantized expected)")


def _layer(graph: Graph, operator: Operator, kernel: str | None, inputs: list[int], **fields) -> Layer:
    output = graph.tensors[operator.outputs[0]]
    return Layer(operator.index, operator.op, output.name, kernel, inputs, list(operator.outputs), **fields)


def _constant(layer_index: int, label: str, array: np.ndarray, c_type: str) -> Constant:
    array = np.ascontiguousarray(array)
    return Constant(f"l{layer_index}_{label}", array.tobytes(), c_type, int(array.size))


def _nhwc(graph: Graph, operator: Operator, tensor: Tensor) -> tuple[int, int, int]:
    if len(tensor.shape) != 4 or tensor.shape[0] != 1:
        raise _fail(graph, operator, f"has tensor '{tensor.name}' of shape {list(tensor.shape)} (1xHxWxC expected)")
    return tensor.shape[1], tensor.shape[2], tensor.shape[3]


def _per_channel(values: np.ndarray, channels: int) -> np.ndarray:
    return np.broadcast_to(values, (channels,)) if len(values) == 1 else values


def _requantization(graph: Graph, operator: Operator, input_t: Tensor, weights: Tensor, bias: np.ndarray,
                    output: Tensor, activation: int, weight_abs_sums: np.ndarray) -> tuple[dict, list[Constant]]:
    """The ek_requant block of a conv or FC layer: per-channel multipliers from TFLite Micro's
    double arithmetic, the shift split for SMMULR, and the accumulator bound that makes it exact."""
    channels = len(bias)
    if np.any(weights.zero_points != 0):
        raise _fail(graph, operator, "has weights with a nonzero zero point")
    scales = _per_channel(weights.scales, channels)
    multipliers, pre_shifts, right_shifts, exact = [], [], [], False
    for c in range(channels):
        real = float(input_t.scale) * float(scales[c]) / float(output.scale)
        multiplier, shift = fx.quantize_multiplier(real)
        pre_shift = max(shift, 0) + 1
        bound = abs(int(bias[c])) + 255 * int(weight_abs_sums[c])
        if bound >= ACCUMULATOR_LIMIT:
            raise _fail(graph, operator, f"can accumulate up to {bound:,} in channel {c}, beyond int32")
        exact = exact or bound << pre_shift >= ACCUMULATOR_LIMIT or shift >= 0
        multipliers.append(multiplier)
        pre_shifts.append(pre_shift)
        right_shifts.append(max(-shift, 0) - 1)
    act_min, act_max = fx.activation_range(activation, output.scale, output.zero_point)
    index = operator.index
    constants = [
        _constant(index, "bias", bias.astype(np.int32), "int32_t"),
        _constant(index, "multiplier", np.array(multipliers, np.int32), "int32_t"),
        _constant(index, "pre_shift", np.array(pre_shifts, np.int8), "int8_t"),
        _constant(index, "right_shift_minus_one", np.array(right_shifts, np.int8), "int8_t"),
    ]
    block = {"bias": constants[0].symbol, "multiplier": constants[1].symbol, "pre_shift": constants[2].symbol,
             "right_shift_minus_one": constants[3].symbol, "output_offset": output.zero_point,
             "act_min": act_min, "act_max": act_max, "exact": int(exact)}
    return block, constants


def pack_weights(rows: np.ndarray) -> np.ndarray:
    """[out_c, K] int8 -> the layout of ek_kernels.h: rows padded with zeros to a multiple of four,
    in pairs, the pair's values interleaved 4 by 4, each four as w0 w2 w1 w3."""
    out_c, depth = rows.shape
    padded = np.zeros((out_c, -(-depth // 4) * 4), np.int8)
    padded[:, :depth] = rows
    groups = padded.reshape(out_c, -1, 4)[:, :, [0, 2, 1, 3]]  # [out_c, K / 4, 4]
    pairs = groups[:out_c // 2 * 2].reshape(out_c // 2, 2, -1, 4).transpose(0, 2, 1, 3)  # pair, group, row, four
    return np.concatenate([pairs.reshape(-1), groups[out_c // 2 * 2:].reshape(-1)]).astype(np.int8)


def _bias(graph: Graph, operator: Operator, channels: int) -> np.ndarray:
    bias = graph.tensor(operator.inputs[2]) if len(operator.inputs) > 2 else None
    if bias is None:
        return np.zeros(channels, np.int64)
    if bias.dtype != "int32" or bias.data is None:
        raise _fail(graph, operator, f"has a {bias.dtype} bias (constant int32 expected)")
    return bias.data.astype(np.int64).reshape(-1)


def _weights(graph: Graph, operator: Operator) -> Tensor:
    weights = graph.tensors[operator.inputs[1]]
    if weights.data is None:
        raise _fail(graph, operator, "has weights computed at run time")
    _int8(graph, operator, weights)
    return weights


# ---------- operators ----------


def _conv_params(in_hwc, out_hwc, kernel_hw, stride, dilation, padding_same: bool, input_offset: int) -> dict:
    (in_h, in_w, in_c), (out_h, out_w, out_c) = in_hwc, out_hwc
    pad_top = fx.same_padding(stride[0], dilation[0], in_h, kernel_hw[0], out_h) if padding_same else 0
    pad_left = fx.same_padding(stride[1], dilation[1], in_w, kernel_hw[1], out_w) if padding_same else 0
    return {"in_h": in_h, "in_w": in_w, "in_c": in_c, "out_h": out_h, "out_w": out_w, "out_c": out_c,
            "k_h": kernel_hw[0], "k_w": kernel_hw[1], "stride_h": stride[0], "stride_w": stride[1],
            "dil_h": dilation[0], "dil_w": dilation[1], "pad_top": pad_top, "pad_left": pad_left,
            "input_offset": input_offset}


def _gemm_layer(graph: Graph, operator: Operator, params: dict, rows: np.ndarray, activation: int) -> Layer:
    """A CONV_2D (or FULLY_CONNECTED as a 1x1 one) on ek_conv_s8."""
    input_t, output = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    weights = graph.tensors[operator.inputs[1]]
    bias = _bias(graph, operator, rows.shape[0])
    requant, constants = _requantization(graph, operator, input_t, weights, bias, output, activation,
                                         np.abs(rows.astype(np.int64)).sum(axis=1))
    packed = _constant(operator.index, "weights", pack_weights(rows), "int8_t")
    depth = rows.shape[1]
    macs = params["out_h"] * params["out_w"] * params["out_c"] * depth
    return _layer(graph, operator, "ek_conv_s8", [operator.inputs[0]], params_type="ek_conv_params",
                  params={**params, "weights": packed.symbol, "rq": requant}, constants=[packed, *constants],
                  args=[Arg("params"), Arg("tensor", operator.inputs[0], const=True),
                        Arg("tensor", operator.outputs[0]), Arg("scratch", c_type="int16_t")],
                  scratch_bytes=4 * -(-depth // 4) * 4, macs=macs)


def _windowed_params(graph: Graph, operator: Operator, k_h: int, k_w: int) -> dict:
    """A CONV_2D's or DEPTHWISE_CONV_2D's geometry from its tensors and options."""
    input_t, output = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    _int8(graph, operator, input_t, output)
    options = operator.options
    return _conv_params(_nhwc(graph, operator, input_t), _nhwc(graph, operator, output), (k_h, k_w),
                        (options.StrideH(), options.StrideW()), (options.DilationHFactor(), options.DilationWFactor()),
                        options.Padding() == Padding.SAME, -input_t.zero_point)


def conv_2d(graph: Graph, operator: Operator) -> Layer:
    weights = _weights(graph, operator)
    out_c, k_h, k_w, w_in_c = weights.shape
    params = _windowed_params(graph, operator, k_h, k_w)
    if w_in_c != params["in_c"]:
        raise _fail(graph, operator, "is a grouped convolution")
    return _gemm_layer(graph, operator, params, weights.data.reshape(out_c, -1),
                       operator.options.FusedActivationFunction())


def fully_connected(graph: Graph, operator: Operator) -> Layer:
    input_t, output = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    weights = _weights(graph, operator)
    _int8(graph, operator, input_t, output)
    units, depth = weights.shape
    rows = math.prod(input_t.shape) // depth
    params = _conv_params((1, rows, depth), (1, rows, units), (1, 1), (1, 1), (1, 1), False, -input_t.zero_point)
    return _gemm_layer(graph, operator, params, weights.data, operator.options.FusedActivationFunction())


def depthwise_conv_2d(graph: Graph, operator: Operator) -> Layer:
    input_t, output = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    weights = _weights(graph, operator)
    options = operator.options
    _, k_h, k_w, out_c = weights.shape
    params = _windowed_params(graph, operator, k_h, k_w)
    params["depth_multiplier"] = out_c // params["in_c"]
    taps = weights.data.reshape(k_h * k_w, out_c).astype(np.int64)
    bias = _bias(graph, operator, out_c)
    requant, constants = _requantization(graph, operator, input_t, weights, bias, output,
                                         options.FusedActivationFunction(), np.abs(taps).sum(axis=0))
    index = operator.index
    packed = _constant(index, "weights", weights.data.reshape(-1), "int8_t")
    interior = _constant(index, "interior_bias", (bias + params["input_offset"] * taps.sum(axis=0)).astype(np.int32),
                         "int32_t")
    return _layer(graph, operator, "ek_depthwise_conv_s8", [operator.inputs[0]], params_type="ek_depthwise_params",
                  params={**params, "weights": packed.symbol, "interior_bias": interior.symbol, "rq": requant},
                  constants=[packed, interior, *constants],
                  args=[Arg("params"), Arg("tensor", operator.inputs[0], const=True), Arg("tensor", operator.outputs[0]),
                        Arg("scratch")],
                  # EK_DEPTHWISE_SCRATCH_BYTES: k_h input rows as wide as one output row's windows
                  scratch_bytes=k_h * ((params["out_w"] - 1) * params["stride_w"] + (k_w - 1) * params["dil_w"] + 1)
                  * params["in_c"],
                  macs=params["out_h"] * params["out_w"] * out_c * k_h * k_w)


def _pool(graph: Graph, operator: Operator, kernel: str) -> Layer:
    input_t, output = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    _int8(graph, operator, input_t, output)
    if input_t.scale != output.scale or input_t.zero_point != output.zero_point:
        raise _fail(graph, operator, "changes the quantization")
    options = operator.options
    (in_h, in_w, channels), (out_h, out_w, _) = _nhwc(graph, operator, input_t), _nhwc(graph, operator, output)
    k_h, k_w, stride_h, stride_w = options.FilterHeight(), options.FilterWidth(), options.StrideH(), options.StrideW()
    same = options.Padding() == Padding.SAME
    act_min, act_max = fx.activation_range(options.FusedActivationFunction(), output.scale, output.zero_point)
    params = {"in_h": in_h, "in_w": in_w, "channels": channels, "out_h": out_h, "out_w": out_w, "k_h": k_h,
              "k_w": k_w, "stride_h": stride_h, "stride_w": stride_w,
              "pad_top": fx.same_padding(stride_h, 1, in_h, k_h, out_h) if same else 0,
              "pad_left": fx.same_padding(stride_w, 1, in_w, k_w, out_w) if same else 0,
              "act_min": act_min, "act_max": act_max}
    average = kernel == "ek_average_pool_s8"
    args = [Arg("params"), Arg("tensor", operator.inputs[0], const=True), Arg("tensor", operator.outputs[0])]
    return _layer(graph, operator, kernel, [operator.inputs[0]], params_type="ek_pool_params", params=params,
                  args=args + ([Arg("scratch", c_type="int32_t")] if average else []),
                  scratch_bytes=4 * channels if average else 0)


def average_pool_2d(graph: Graph, operator: Operator) -> Layer:
    return _pool(graph, operator, "ek_average_pool_s8")


def max_pool_2d(graph: Graph, operator: Operator) -> Layer:
    return _pool(graph, operator, "ek_max_pool_s8")


def _broadcast_strides(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[int]:
    """Element strides of `shape` for stepping through `out_shape` (both as rank 4; 0 where broadcast)."""
    padded = (1,) * (4 - len(shape)) + tuple(shape)
    strides, step = [0] * 4, 1
    for d in range(3, -1, -1):
        strides[d] = 0 if padded[d] == 1 and out_shape[d] != 1 else step
        step *= padded[d]
    return strides


def _binary(graph: Graph, operator: Operator, kernel: str) -> Layer:
    first, second = (graph.tensors[i] for i in operator.inputs[:2])
    output = graph.tensors[operator.outputs[0]]
    _int8(graph, operator, first, second, output)
    if len(output.shape) > 4:
        raise _fail(graph, operator, "has more than 4 dimensions")
    out_shape = (1,) * (4 - len(output.shape)) + tuple(output.shape)
    act_min, act_max = fx.activation_range(operator.options.FusedActivationFunction(), output.scale,
                                           output.zero_point)
    same_shape = first.shape == second.shape == output.shape
    params = {"shape": list(out_shape), "strides1": _broadcast_strides(first.shape, out_shape),
              "strides2": _broadcast_strides(second.shape, out_shape), "same_shape": int(same_shape),
              "input1_offset": -first.zero_point, "input2_offset": -second.zero_point,
              "output_offset": output.zero_point, "table1": "NULL", "table2": "NULL", "fast_output": 0,
              "act_min": act_min, "act_max": act_max}
    constants = []
    if kernel == "ek_add_s8":
        # TFLite Micro's ADD: both inputs shifted left by 20 and rescaled to twice the larger input scale,
        # summed, then rescaled to the output. The first step depends on one int8 value: a table.
        twice_max = 2 * max(float(first.scale), float(second.scale))
        for number, tensor in ((1, first), (2, second)):
            multiplier, shift = fx.quantize_multiplier(float(tensor.scale) / twice_max)
            table = np.array([fx.multiply_by_quantized_multiplier(fx.wrap32((v - tensor.zero_point) << 20),
                                                                  multiplier, shift) for v in range(-128, 128)],
                             np.int32)
            constants.append(_constant(operator.index, f"table{number}", table, "int32_t"))
            params[f"table{number}"] = constants[-1].symbol
        multiplier, shift = fx.quantize_multiplier(twice_max / ((1 << 20) * float(output.scale)))
        largest_sum = sum(int(np.abs(np.frombuffer(c.data, np.int32)).max()) for c in constants)
        params["fast_output"] = int(shift <= -1 and largest_sum < 1 << 30)
    else:
        multiplier, shift = fx.quantize_multiplier(float(first.scale) * float(second.scale) / float(output.scale))
    params["output_multiplier"], params["output_shift"] = multiplier, shift
    return _layer(graph, operator, kernel, list(operator.inputs[:2]), params_type="ek_binary_params", params=params,
                  constants=constants,
                  args=[Arg("params"), Arg("tensor", operator.inputs[0], const=True),
                        Arg("tensor", operator.inputs[1], const=True), Arg("tensor", operator.outputs[0])],
                  in_place=same_shape)


def add(graph: Graph, operator: Operator) -> Layer:
    return _binary(graph, operator, "ek_add_s8")


def mul(graph: Graph, operator: Operator) -> Layer:
    return _binary(graph, operator, "ek_mul_s8")


def softmax(graph: Graph, operator: Operator) -> Layer:
    input_t, output = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    _int8(graph, operator, input_t, output)
    if output.zero_point != -128 or abs(output.scale - 1 / 256) > 1e-9:
        raise _fail(graph, operator, "has an output quantization other than scale 1/256, zero point -128")
    integer_bits = 5
    real = min(float(operator.options.Beta()) * float(input_t.scale) * (1 << (31 - integer_bits)), (1 << 31) - 1.0)
    multiplier, left_shift = fx.quantize_multiplier(real)
    depth = input_t.shape[-1]
    params = {"rows": math.prod(input_t.shape) // depth, "depth": depth, "input_multiplier": multiplier,
              "input_left_shift": left_shift, "diff_min": -fx.input_radius(integer_bits, left_shift)}
    return _layer(graph, operator, "ek_softmax_s8", [operator.inputs[0]], params_type="ek_softmax_params",
                  params=params, args=[Arg("params"), Arg("tensor", operator.inputs[0], const=True),
                                       Arg("tensor", operator.outputs[0])])


def reshape(graph: Graph, operator: Operator) -> Layer:
    """No code: the output is the input's bytes under another shape (the planner gives both one storage).
    SQUEEZE and EXPAND_DIMS are the same."""
    return _layer(graph, operator, None, [operator.inputs[0]])


# ---------- data movement: bytes copied as TFLite Micro copies them ----------

MAX_RANK = 5  # of ek_gather_params and ek_pad_params


def _same_quantization(a: Tensor, b: Tensor) -> bool:
    if not (a.quantized and b.quantized):
        return a.quantized == b.quantized
    return (len(a.scales) == len(b.scales) == 1 and float(a.scale) == float(b.scale)
            and a.zero_point == b.zero_point)


def _movable(graph: Graph, operator: Operator, source: Tensor, result: Tensor) -> int:
    """Checks a copy from `source` to `result` is what TFLite Micro computes (same type and quantization);
    returns the element size in bytes."""
    if source.dtype != result.dtype or source.dtype not in NUMPY_DTYPES:
        raise _fail(graph, operator, f"has a {source.dtype} input and a {result.dtype} output")
    if not _same_quantization(source, result):
        raise _fail(graph, operator, f"changes the quantization from '{source.name}' to '{result.name}'")
    if len(source.shape) > MAX_RANK or len(result.shape) > MAX_RANK:
        raise _fail(graph, operator, f"has more than {MAX_RANK} dimensions")
    return np.dtype(NUMPY_DTYPES[source.dtype]).itemsize


def _constant_values(graph: Graph, operator: Operator, position: int, what: str) -> np.ndarray:
    tensor = graph.tensor(operator.inputs[position]) if len(operator.inputs) > position else None
    if tensor is None or tensor.data is None:
        raise _fail(graph, operator, f"has {what} computed at run time")
    return tensor.data.astype(np.int64)


def _row_major_strides(shape) -> list[int]:
    strides, step = [], 1
    for size in reversed(list(shape)):
        strides.insert(0, step)
        step *= int(size)
    return strides


def _five(values: list[int], fill: int) -> list[int]:
    return [int(v) for v in values] + [fill] * (MAX_RANK - len(values))


def _gather_layer(graph: Graph, operator: Operator, out_shape: list[int], in_strides: list[int], in_start: int) -> Layer:
    """TRANSPOSE and STRIDED_SLICE: the output in order, each element read at a strided input position."""
    source, result = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    element_bytes = _movable(graph, operator, source, result)
    if math.prod(out_shape) != math.prod(result.shape):
        raise _fail(graph, operator, f"states an output of shape {list(result.shape)}, not {out_shape}")
    params = {"rank": max(len(out_shape), 1), "element_bytes": element_bytes, "out_shape": _five(out_shape or [1], 1),
              "in_strides": _five(in_strides or [0], 0), "in_start": in_start}
    return _layer(graph, operator, "ek_gather", [operator.inputs[0]], params_type="ek_gather_params", params=params,
                  args=[Arg("params"), Arg("tensor", operator.inputs[0], c_type="void", const=True),
                        Arg("tensor", operator.outputs[0], c_type="void")])


def transpose(graph: Graph, operator: Operator) -> Layer:
    shape = graph.tensors[operator.inputs[0]].shape
    permutation = [int(p) % max(len(shape), 1) for p in _constant_values(graph, operator, 1, "a permutation").reshape(-1)]
    if sorted(permutation) != list(range(len(shape))):
        raise _fail(graph, operator, f"has the permutation {permutation} for a rank {len(shape)} input")
    strides = _row_major_strides(shape)
    return _gather_layer(graph, operator, [shape[p] for p in permutation], [strides[p] for p in permutation], 0)


def slice_bounds(size: int, begin: int, end: int, stride: int, masked_begin: bool, masked_end: bool,
                  shrink: bool) -> tuple[int, int]:
    """TFLite's StartForAxis and StopForAxis (strided_slice_logic.h): the first index and the bound."""
    low, high = (0, size) if stride > 0 else (-1, size - 1)
    start = (low if stride > 0 else high) if masked_begin else begin + (size if begin < 0 else 0)
    start = min(max(start, low), high)
    if shrink:
        return start, start + 1
    stop = (size if stride > 0 else -1) if masked_end else end + (size if end < 0 else 0)
    return start, min(max(stop, low), high)


def strided_slice(graph: Graph, operator: Operator) -> Layer:
    options = operator.options
    if options.EllipsisMask() or options.NewAxisMask() or options.Offset():
        raise _fail(graph, operator, "uses an ellipsis, a new axis or offsets")
    shape = graph.tensors[operator.inputs[0]].shape
    begin, end, steps = (_constant_values(graph, operator, i, what).reshape(-1)
                         for i, what in ((1, "begin indices"), (2, "end indices"), (3, "strides")))
    strides = _row_major_strides(shape)
    out_shape, in_strides, in_start = [], [], 0
    for axis, size in enumerate(shape):
        if axis < len(begin):
            step = int(steps[axis])
            if step == 0:
                raise _fail(graph, operator, f"has stride 0 on axis {axis}")
            start, stop = slice_bounds(size, int(begin[axis]), int(end[axis]), step,
                                        bool(options.BeginMask() >> axis & 1), bool(options.EndMask() >> axis & 1),
                                        bool(options.ShrinkAxisMask() >> axis & 1))
        else:
            start, stop, step = 0, size, 1
        out_shape.append(len(range(start, stop, step)))
        in_strides.append(step * strides[axis])
        in_start += start * strides[axis]
    return _gather_layer(graph, operator, out_shape, in_strides, in_start)


def pad(graph: Graph, operator: Operator) -> Layer:
    """PAD and PADV2: the output filled with the pad value (PAD: the output zero point), the input copied
    into its window."""
    source, result = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    element_bytes = _movable(graph, operator, source, result)
    paddings = _constant_values(graph, operator, 1, "paddings").reshape(-1, 2)
    if len(paddings) != len(source.shape) or np.any(paddings < 0):
        raise _fail(graph, operator, f"has paddings {paddings.tolist()} for a rank {len(source.shape)} input")
    out_shape = [int(size + before + after) for size, (before, after) in zip(source.shape, paddings)]
    constant = graph.tensor(operator.inputs[2]) if len(operator.inputs) > 2 else None
    if constant is None:
        value = np.zeros(1, NUMPY_DTYPES[source.dtype]) + (result.zero_point if result.quantized else 0)
    elif constant.data is None or not _same_quantization(constant, result) or constant.dtype != result.dtype:
        raise _fail(graph, operator, "has a pad value computed at run time or quantized unlike its output")
    else:
        value = constant.data.reshape(-1)[:1]
    # The pad value's bytes as one int32 (little-endian): ek_pad copies its first element_bytes.
    pad_value = int(np.frombuffer(value.astype(NUMPY_DTYPES[source.dtype]).tobytes().ljust(4, b"\0")[:4], np.int32)[0])
    out_strides = _row_major_strides(out_shape)
    params = {"rank": len(out_shape), "element_bytes": element_bytes, "in_shape": _five(list(source.shape), 1),
              "out_strides": _five(out_strides, 0),
              "out_start": sum(int(before) * stride for (before, _), stride in zip(paddings, out_strides)),
              "out_elements": math.prod(out_shape), "pad_value": pad_value}
    if out_shape != list(result.shape):
        raise _fail(graph, operator, f"states an output of shape {list(result.shape)}, not {out_shape}")
    if not source.shape:
        raise _fail(graph, operator, "pads a scalar")
    return _layer(graph, operator, "ek_pad", [operator.inputs[0]], params_type="ek_pad_params", params=params,
                  args=[Arg("params"), Arg("tensor", operator.inputs[0], c_type="void", const=True),
                        Arg("tensor", operator.outputs[0], c_type="void")])


def concatenation(graph: Graph, operator: Operator) -> Layer:
    """TFLite Micro copies int8 inputs without rescaling and requires them quantized like the output."""
    from tflite.ActivationFunctionType import ActivationFunctionType

    result = graph.tensors[operator.outputs[0]]
    if operator.options.FusedActivationFunction() != ActivationFunctionType.NONE:
        raise _fail(graph, operator, "has a fused activation")
    axis = operator.options.Axis() % len(result.shape)
    element_bytes, block_bytes = 0, []
    for t in operator.inputs:
        source = graph.tensors[t]
        element_bytes = _movable(graph, operator, source, result)
        block_bytes.append(math.prod(source.shape[axis:]) * element_bytes)
    outer = math.prod(result.shape[:axis])
    if outer * sum(block_bytes) != result.nbytes:
        raise _fail(graph, operator, f"does not add up to its output's shape {list(result.shape)}")
    sizes = _constant(operator.index, "bytes", np.array(block_bytes, np.int32), "int32_t")
    return _layer(graph, operator, "ek_concat", list(operator.inputs), constants=[sizes],
                  args=[Arg("int", value=outer), Arg("int", value=len(block_bytes)), Arg("constant", value=sizes.symbol),
                        Arg("tensors", value=list(operator.inputs)), Arg("tensor", operator.outputs[0], c_type="void")])


# ---------- per-element functions and reductions ----------


def _elements(tensor: Tensor) -> int:
    return math.prod(tensor.shape)


def _lookup_layer(graph: Graph, operator: Operator, table: np.ndarray) -> Layer:
    """An int8 -> int8 function of one value as the 256-entry table ek_lookup_s8 reads (in place when legal)."""
    source = graph.tensors[operator.inputs[0]]
    constant = _constant(operator.index, "table", table.astype(np.int8), "int8_t")
    return _layer(graph, operator, "ek_lookup_s8", [operator.inputs[0]], constants=[constant],
                  args=[Arg("constant", value=constant.symbol), Arg("int", value=_elements(source)),
                        Arg("tensor", operator.inputs[0], const=True), Arg("tensor", operator.outputs[0])],
                  in_place=True)


def logistic(graph: Graph, operator: Operator) -> Layer:
    source, result = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    _int8(graph, operator, source, result)
    if result.zero_point != -128 or float(result.scale) != 1 / 256:
        raise _fail(graph, operator, "has an output quantization other than scale 1/256, zero point -128")
    return _lookup_layer(graph, operator, fx.logistic_table(source.scale, source.zero_point))


def hard_swish(graph: Graph, operator: Operator) -> Layer:
    source, result = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    _int8(graph, operator, source, result)
    try:
        table = fx.hard_swish_table(source.scale, source.zero_point, result.scale, result.zero_point)
    except ValueError as err:
        raise _fail(graph, operator, f"has a {err}") from None
    return _lookup_layer(graph, operator, table)


def quantize(graph: Graph, operator: Operator) -> Layer:
    """int8 -> int8 (a new scale or zero point) as a table; float32 -> int8 with TFLite's rounding."""
    source, result = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    _int8(graph, operator, result)
    if source.dtype == "int8" and source.quantized:
        return _lookup_layer(graph, operator, fx.requantize_table(source.scale, source.zero_point, result.scale,
                                                                  result.zero_point))
    if source.dtype != "float32" or len(result.scales) != 1:
        raise _fail(graph, operator, f"quantizes a {source.dtype} tensor (float32 or int8 expected) per channel or from it")
    return _layer(graph, operator, "ek_quantize_f32", [operator.inputs[0]],
                  args=[Arg("int", value=_elements(source)), Arg("int", value=result.zero_point),
                        Arg("float", value=float(result.scale)), Arg("tensor", operator.inputs[0], c_type="float", const=True),
                        Arg("tensor", operator.outputs[0])])


def dequantize(graph: Graph, operator: Operator) -> Layer:
    source, result = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    _int8(graph, operator, source)
    if result.dtype != "float32" or len(source.scales) != 1:
        raise _fail(graph, operator, f"dequantizes to {result.dtype} (float32 expected) or per channel")
    return _layer(graph, operator, "ek_dequantize_s8", [operator.inputs[0]],
                  args=[Arg("int", value=_elements(source)), Arg("int", value=source.zero_point),
                        Arg("float", value=float(source.scale)), Arg("tensor", operator.inputs[0], const=True),
                        Arg("tensor", operator.outputs[0], c_type="float")])


def mean(graph: Graph, operator: Operator) -> Layer:
    """MEAN over H and W of a 1xHxWxC tensor (keep_dims or not): TFLite Micro's QuantizedMeanOrSum (for any
    quantization, the input's own included), its multiplier rescaled by 1 / (H * W) at build time as
    TFLite Micro does at run time."""
    source, result = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
    _int8(graph, operator, source, result)
    axes = sorted({int(a) % max(len(source.shape), 1) for a in _constant_values(graph, operator, 1, "axes").reshape(-1)})
    if len(source.shape) != 4 or source.shape[0] != 1 or axes != [1, 2]:
        raise _fail(graph, operator, f"reduces axes {axes} of shape {list(source.shape)} (axes 1 and 2 of 1xHxWxC "
                                     f"expected)")
    in_h, in_w, channels = source.shape[1:]
    count = in_h * in_w
    multiplier, shift = fx.quantize_multiplier(float(source.scale) / float(result.scale))
    extra = min(count.bit_length() - 1, 32, 31 + shift)
    multiplier, shift = (multiplier << extra) // count, shift - extra
    params = {"in_h": in_h, "in_w": in_w, "channels": channels, "input_offset": -source.zero_point,
              "output_offset": result.zero_point, "multiplier": multiplier, "shift": shift}
    return _layer(graph, operator, "ek_mean_hw_s8", [operator.inputs[0]], params_type="ek_mean_params", params=params,
                  args=[Arg("params"), Arg("tensor", operator.inputs[0], const=True), Arg("tensor", operator.outputs[0])])


LOWERINGS: dict[str, Callable[[Graph, Operator], Layer]] = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "FULLY_CONNECTED": fully_connected,
    "AVERAGE_POOL_2D": average_pool_2d,
    "MAX_POOL_2D": max_pool_2d,
    "ADD": add,
    "MUL": mul,
    "SOFTMAX": softmax,
    "RESHAPE": reshape,
    "SQUEEZE": reshape,
    "EXPAND_DIMS": reshape,
    "TRANSPOSE": transpose,
    "STRIDED_SLICE": strided_slice,
    "PAD": pad,
    "PADV2": pad,
    "CONCATENATION": concatenation,
    "LOGISTIC": logistic,
    "HARD_SWISH": hard_swish,
    "QUANTIZE": quantize,
    "DEQUANTIZE": dequantize,
    "MEAN": mean,
}
