"""TFLite import for TVM that computes int8 operators with LiteRT's integer arithmetic.

TVM's Relax TFLite frontend imports an int8 model as dequantize -> float op -> quantize. LiteRT
computes in integers, and where the two round differently an output is one LSB off; deep int8
networks amplify such LSBs (ResNet-8: 84 LSB at the softmax). The converter here gives these
operators LiteRT's arithmetic, that of the kernels the default interpreter runs on the host:

    AVERAGE_POOL_2D  TFLite kernel: window sum / count rounded half away from zero
                     (the frontend divided in integers, truncating: half the outputs 1 LSB off)
    CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED
                     XNNPACK: exact int32 accumulation, then float32(acc) * float32 scale rounded
                     half to even (the frontend summed float products: rare 1 LSB differences)
                     The accumulation runs on the int8 operands (int8 x int8 -> int32), so the kernels
                     can use widening multiplies: TFLite's int8 weights are symmetric (zero point 0),
                     sum((x - zx) * w) = sum(x * w) - zx * sum(w), and zx * sum(w) folds into the bias;
                     SAME padding is an explicit pad with zx (its terms then cancel in the fold).
    ADD              XNNPACK: fixed-point multipliers with 2**shift scaling, rounded half up

FULLY_CONNECTED of any type also gets the output shape the model lists (the frontend ignores
keep_num_dims, so a rank-4 input kept its rank).

Other operators, and int8 ones outside these forms, keep the frontend's conversion.
Imported only when the tvm backend imports a TFLite model (it imports tvm and tflite at once).
"""

import numpy as np
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.AddOptions import AddOptions
from tflite.Conv2DOptions import Conv2DOptions
from tflite.DepthwiseConv2DOptions import DepthwiseConv2DOptions
from tflite.FullyConnectedOptions import FullyConnectedOptions
from tflite.Padding import Padding
from tflite.Pool2DOptions import Pool2DOptions
from tflite.TensorType import TensorType
from tvm import relax
from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter, get_pad_value


def options(op, options_class):
    parsed = options_class()
    parsed.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
    return parsed


def scales(tensor) -> np.ndarray:
    return tensor.tensor.Quantization().ScaleAsNumpy().astype(np.float32)


def zero_point(tensor) -> int:
    return int(tensor.tensor.Quantization().ZeroPointAsNumpy()[0])


def is_int8(tensor) -> bool:
    return tensor.tensor_idx >= 0 and tensor.qnn_params is not None and tensor.tensor.Type() == TensorType.INT8


# Fused activations that are clamps, by their float bounds; the integer path computes no others.
clamp_bounds = {
    ActivationFunctionType.NONE: (-np.inf, np.inf),
    ActivationFunctionType.RELU: (0.0, np.inf),
    ActivationFunctionType.RELU6: (0.0, 6.0),
    ActivationFunctionType.RELU_N1_TO_1: (-1.0, 1.0),
}


def activation_range(tensor, activation) -> tuple[int, int]:
    """Integer output range of a clamp activation, its bounds quantized as XNNPACK does (TFLite's kernels
    round ties away from zero instead: the same but for exact ties)."""
    scale, offset = np.float32(scales(tensor)[0]), np.float32(zero_point(tensor))
    low, high = (np.clip(np.rint(np.float32(b) / scale + offset), -128, 127) for b in clamp_bounds[activation])
    return int(low), int(high)


def same_padding(size, kernel, stride, dilation=1) -> tuple[int, int]:
    return get_pad_value(size, dilation * (kernel - 1) + 1, stride)


def requantization_scale(input_tensor, weight_tensor, output_tensor) -> np.ndarray:
    # XNNPACK's float32 arithmetic, in its order: input_scale * kernel_scale / output_scale.
    return scales(input_tensor)[0] * scales(weight_tensor) / scales(output_tensor)[0]


class Int8OperatorConverter(OperatorConverter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.convert_map["ADD"] = self.convert_add  # the frontend maps ADD to a partial, not a method

    def _minus_zero_point(self, tensor):
        """An int8 tensor as int32 with its zero point taken off: the operand of ADD's integer arithmetic."""
        data = relax.op.astype(self.get_tensor_expr(tensor), "int32")
        return relax.op.subtract(data, relax.const(zero_point(tensor), "int32"))

    def _add_folded_bias(self, accumulator, bias_tensor, input_zero_point: int, weight_sums: np.ndarray):
        """sum(x * w) + bias - zx * sum(w) per output channel: the accumulator of sum((x - zx) * w) + bias.
        int32 wraps like the int32 accumulator it replaces, so the two agree bit for bit."""
        folded = -input_zero_point * weight_sums
        if bias_tensor is not None:
            folded = folded + self.get_tensor_value(bias_tensor).astype(np.int64)
        if not folded.any():
            return accumulator
        return relax.op.add(accumulator, relax.const(folded.astype(np.int32), "int32"))

    def _requantize(self, accumulator, scale: np.ndarray, output_tensor, output_range):
        """XNNPACK's fp32 requantization: round(float(acc) * scale) half to even, plus the zero point, clamped."""
        scaled = relax.op.multiply(relax.op.astype(accumulator, "float32"), relax.const(scale, "float32"))
        shifted = relax.op.add(relax.op.round(scaled), relax.const(float(zero_point(output_tensor)), "float32"))
        return relax.op.astype(relax.op.clip(shifted, *output_range), "int8")

    def _computes_in_integers(self, input_tensor, weight_tensor, bias_tensor, output_tensor, activation) -> bool:
        """Whether a conv or FC op has the int8 form the integer path computes (else the frontend converts it)."""
        return (
            is_int8(input_tensor) and is_int8(weight_tensor) and is_int8(output_tensor)
            and activation in clamp_bounds
            and not weight_tensor.tensor.Quantization().ZeroPointAsNumpy().any()
            and not self.has_expr(weight_tensor.tensor_idx) and not self.is_prefetched(weight_tensor.tensor_idx)
            and (bias_tensor is None
                 or (bias_tensor.tensor.Type() == TensorType.INT32 and not self.has_expr(bias_tensor.tensor_idx)))
        )  # fmt: skip

    def convert_conv(self, op, conv_type):
        input_tensor, weight_tensor, *rest = self.get_input_tensors(op)
        bias_tensor = rest[0] if rest and rest[0].tensor_idx >= 0 else None
        output_tensor = self.get_output_tensors(op)[0]
        conv_options = options(op, Conv2DOptions if conv_type == "conv2d" else DepthwiseConv2DOptions)
        activation = conv_options.FusedActivationFunction()
        if not self._computes_in_integers(input_tensor, weight_tensor, bias_tensor, output_tensor, activation):
            return super().convert_conv(op, conv_type)

        _, height, width, input_channels = (int(d) for d in self.get_tensor_shape(input_tensor))
        weights = self.get_tensor_value(weight_tensor)
        if conv_type == "depthwise":  # [1, KH, KW, C * M]: one group per input channel
            _, kernel_h, kernel_w, output_channels = weights.shape
            weight_sums = weights.sum(axis=(0, 1, 2), dtype=np.int64)
            if input_channels == 1:
                weights, layout = weights.reshape(kernel_h, kernel_w, 1, output_channels), "HWIO"
            else:
                weights, layout = weights.reshape(kernel_h, kernel_w, output_channels, 1), "HWOI"
            groups = input_channels
        else:  # [OC, KH, KW, IC]
            _, kernel_h, kernel_w, group_channels = weights.shape
            weight_sums = weights.sum(axis=(1, 2, 3), dtype=np.int64)
            weights, layout = weights.transpose(1, 2, 3, 0), "HWIO"
            groups = input_channels // group_channels
        strides = (conv_options.StrideH(), conv_options.StrideW())
        dilation = (conv_options.DilationHFactor(), conv_options.DilationWFactor())
        data = self.get_tensor_expr(input_tensor)
        if conv_options.Padding() == Padding.SAME:
            top, bottom = same_padding(height, kernel_h, strides[0], dilation[0])
            left, right = same_padding(width, kernel_w, strides[1], dilation[1])
            if top or bottom or left or right:  # TFLite pads with the zero point: x - zx = 0 there
                data = relax.op.nn.pad(data, [0, 0, top, bottom, left, right, 0, 0], pad_value=zero_point(input_tensor))

        accumulator = relax.op.nn.conv2d(
            data, relax.const(weights, "int8"), strides=strides, dilation=dilation, groups=groups,
            data_layout="NHWC", kernel_layout=layout, out_dtype="int32",
        )  # fmt: skip
        accumulator = self._add_folded_bias(accumulator, bias_tensor, zero_point(input_tensor), weight_sums)
        scale = requantization_scale(input_tensor, weight_tensor, output_tensor)
        return self._requantize(accumulator, scale, output_tensor, activation_range(output_tensor, activation))

    def convert_fully_connected(self, op):
        input_tensor, weight_tensor, *rest = self.get_input_tensors(op)
        bias_tensor = rest[0] if rest and rest[0].tensor_idx >= 0 else None
        output_tensor = self.get_output_tensors(op)[0]
        activation = options(op, FullyConnectedOptions).FusedActivationFunction()
        output_shape = [int(d) for d in self.get_tensor_shape(output_tensor)]
        if not self._computes_in_integers(input_tensor, weight_tensor, bias_tensor, output_tensor, activation):
            # The frontend ignores keep_num_dims=False: a [1,1,1,64] input gave [1,1,1,10], not [1,10].
            return relax.op.reshape(super().convert_fully_connected(op), output_shape)

        weights = self.get_tensor_value(weight_tensor)  # [OC, IC]
        input_size = int(np.prod([int(d) for d in self.get_tensor_shape(input_tensor)]))
        rows = relax.op.reshape(self.get_tensor_expr(input_tensor), (input_size // weights.shape[1], weights.shape[1]))
        accumulator = relax.op.matmul(rows, relax.const(weights.T.copy(), "int8"), out_dtype="int32")
        accumulator = self._add_folded_bias(accumulator, bias_tensor, zero_point(input_tensor),
                                            weights.sum(axis=1, dtype=np.int64))
        scale = requantization_scale(input_tensor, weight_tensor, output_tensor)
        output = self._requantize(accumulator, scale, output_tensor, activation_range(output_tensor, activation))
        return relax.op.reshape(output, output_shape)

    def convert_add(self, op):
        a, b = self.get_input_tensors(op)
        output_tensor = self.get_output_tensors(op)[0]
        activation = options(op, AddOptions).FusedActivationFunction()
        if not (is_int8(a) and is_int8(b) and is_int8(output_tensor) and activation in clamp_bounds):
            return self._convert_elemwise(op, relax.op.add)
        a_scale, b_scale = (scales(t)[0] / scales(output_tensor)[0] for t in (a, b))
        # XNNPACK takes input/output scale ratios in [2**-10, 2**8); TFLite's own kernel does the rest.
        if not all(2.0**-10 <= s < 2.0**8 for s in (a_scale, b_scale)):
            return self._convert_elemwise(op, relax.op.add)
        # The larger multiplier scaled into [2**20, 2**21); (acc + 2**(shift-1)) >> shift rounds half up.
        shift = 20 - (int(np.frexp(max(a_scale, b_scale))[1]) - 1)
        a_multiplier, b_multiplier = (int(np.rint(np.float32(s) * np.float32(2.0**shift))) for s in (a_scale, b_scale))
        accumulator = relax.op.add(
            relax.op.multiply(self._minus_zero_point(a), relax.const(a_multiplier, "int32")),
            relax.op.multiply(self._minus_zero_point(b), relax.const(b_multiplier, "int32")),
        )
        rounding = relax.const(1 << (shift - 1), "int32")
        rounded = relax.op.right_shift(relax.op.add(accumulator, rounding), relax.const(shift, "int32"))
        shifted = relax.op.add(rounded, relax.const(zero_point(output_tensor), "int32"))
        return relax.op.astype(relax.op.clip(shifted, *activation_range(output_tensor, activation)), "int8")

    def convert_pool2d(self, op, pool_type):
        input_tensor = self.get_input_tensors(op)[0]
        output_tensor = self.get_output_tensors(op)[0]
        pool_options = options(op, Pool2DOptions)
        activation = pool_options.FusedActivationFunction()
        if pool_type != "average" or not (is_int8(input_tensor) and is_int8(output_tensor) and activation in clamp_bounds):
            return super().convert_pool2d(op, pool_type)
        window = (pool_options.FilterHeight(), pool_options.FilterWidth())
        strides = (pool_options.StrideH(), pool_options.StrideW())
        _, height, width, channels = (int(d) for d in self.get_tensor_shape(input_tensor))
        (top, bottom), (left, right) = ((0, 0), (0, 0))
        if pool_options.Padding() == Padding.SAME:
            (top, bottom), (left, right) = (same_padding(n, k, s) for n, k, s in zip((height, width), window, strides))

        # Window sums of the raw int8 values (input and output share scale and zero point): a depthwise
        # convolution of the int8 input with a kernel of ones; the padding's zeros add nothing.
        ones = relax.const(np.ones((*window, channels, 1), "int8"))
        sums = relax.op.nn.conv2d(self.get_tensor_expr(input_tensor), ones, strides=strides,
                                  padding=(top, left, bottom, right), groups=channels, data_layout="NHWC",
                                  kernel_layout="HWOI", out_dtype="int32")  # fmt: skip
        # Padding does not count: each output divides by the number of real inputs in its window.
        rows = np.arange(-top, height + bottom - window[0] + 1, strides[0])
        cols = np.arange(-left, width + right - window[1] + 1, strides[1])
        row_counts = np.minimum(rows + window[0], height) - np.maximum(rows, 0)
        col_counts = np.minimum(cols + window[1], width) - np.maximum(cols, 0)
        counts = np.outer(row_counts, col_counts).astype("int32")[None, :, :, None]
        # TFLite: (sum +- count / 2) / count in C integer division, i.e. rounded half away from zero.
        rounded = relax.op.multiply(
            relax.op.sign(sums),
            relax.op.floor_divide(relax.op.add(relax.op.abs(sums), relax.const(counts // 2)), relax.const(counts)),
        )
        return relax.op.astype(relax.op.clip(rounded, *activation_range(output_tensor, activation)), "int8")
