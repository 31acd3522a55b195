"""TFLite Micro's build-time quantization arithmetic (quantization_util.cc, kernel_util.cc), in
Python integers and IEEE doubles as the C++ computes it, so the kernels' parameters are the ones
TFLite Micro's reference kernels would use."""

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


def tflite_round(value: float) -> int:
    """std::round: half away from zero."""
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier: (multiplier in [2^30, 2^31), shift) with real = multiplier * 2^(shift - 31)."""
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    fixed = tflite_round(fraction * (1 << 31))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (1 << 31) - 1, 30
    return fixed, shift


def srdhm(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul for int32."""
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    product = a * b
    nudge = (1 << 30) if product >= 0 else 1 - (1 << 30)
    return _truncating_div(product + nudge, 1 << 31)  # C++ integer division truncates toward zero


def _truncating_div(a: int, b: int) -> int:
    quotient = abs(a) // b
    return quotient if a >= 0 else -quotient


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def wrap32(x: int) -> int:
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return rounding_divide_by_pot(srdhm(wrap32(x * (1 << left)), multiplier), right)


def activation_range(activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8: the fused activation's bounds in output integers."""
    from tflite.ActivationFunctionType import ActivationFunctionType as Act

    def quantize(value: float) -> int:
        return zero_point + tflite_round(float(np.float32(value) / np.float32(scale)))

    if activation == Act.RELU:
        return max(INT8_MIN, quantize(0.0)), INT8_MAX
    if activation == Act.RELU6:
        return max(INT8_MIN, quantize(0.0)), min(INT8_MAX, quantize(6.0))
    if activation == Act.RELU_N1_TO_1:
        return max(INT8_MIN, quantize(-1.0)), min(INT8_MAX, quantize(1.0))
    if activation == Act.NONE:
        return INT8_MIN, INT8_MAX
    raise ValueError(f"fused activation {activation}")


def same_padding(stride: int, dilation: int, in_size: int, filter_size: int, out_size: int) -> int:
    """ComputePaddingWithOffset's leading padding, from the output size the model states."""
    effective = (filter_size - 1) * dilation + 1
    return max((out_size - 1) * stride + effective - in_size, 0) // 2


def input_radius(integer_bits: int, left_shift: int, total_bits: int = 31) -> int:
    """CalculateInputRadius."""
    return math.floor(((1 << integer_bits) - 1) * (1 << (total_bits - integer_bits)) / (1 << left_shift))


# ---------- gemmlowp's fixed-point functions (fixedpoint.h) on int32 raw values ----------

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def saturating_rounding_multiply_by_pot(x: int, exponent: int) -> int:
    """SaturatingRoundingMultiplyByPOT: a saturating left shift, or a rounding right shift."""
    if exponent <= 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return INT32_MAX if x > threshold else INT32_MIN if x < -threshold else x << exponent


def _rounding_half_sum(a: int, b: int) -> int:
    total = a + b
    return _truncating_div(total + (1 if total >= 0 else -1), 2)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    """exp(a) for a in [-1/4, 0): Q0.31 in and out."""
    constant_term, constant_1_over_3 = 1895147668, 715827883  # exp(-1/8), 1/3
    x = a + (1 << 28)  # + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    rest = saturating_rounding_multiply_by_pot(srdhm(x4_over_4 + x3, constant_1_over_3) + x2, -1)
    return constant_term + srdhm(constant_term, x + rest)


# exp(-2^k) in Q0.31 for k = -2 .. 4: gemmlowp's barrel shifter.
_EXP_BARREL = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)


def exp_on_negative_values(a: int, integer_bits: int) -> int:
    """exp(a) for a <= 0 given with `integer_bits` integer bits; the result in Q0.31."""
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, integer_bits))
    remainder = a_mod_quarter_minus_one_quarter - a
    for k, multiplier in enumerate(_EXP_BARREL, start=-2):
        if integer_bits > k and remainder & (1 << (fractional_bits + k)):
            result = srdhm(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):  # below -32
        result = 0
    return INT32_MAX if a == 0 else result


def _one_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    """1 / (1 + a) for a in [0, 1), Q0.31 in and out: Newton-Raphson in Q2.29."""
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    x = 1515870810 + srdhm(half_denominator, -1010580540)  # 48/17 - 32/17 * d
    for _ in range(3):
        one_minus_half_denominator_times_x = (1 << 29) - srdhm(half_denominator, x)
        x = x + saturating_rounding_multiply_by_pot(srdhm(x, one_minus_half_denominator_times_x), 2)
    return saturating_rounding_multiply_by_pot(x, 1)


def logistic(a: int, integer_bits: int) -> int:
    """gemmlowp::logistic of a raw value with `integer_bits` integer bits; the result in Q0.31."""
    if a == 0:
        return 1 << 30
    positive = _one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs(a), integer_bits))
    return positive if a > 0 else INT32_MAX - positive


# ---------- int8 -> int8 functions as 256-entry tables (value + 128 -> result) ----------


def requantize_table(input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int) -> np.ndarray:
    """QUANTIZE int8 -> int8: reference_ops::Requantize with the multiplier of input/output scale."""
    multiplier, shift = quantize_multiplier(float(input_scale) / float(output_scale))
    return np.array([min(max(multiply_by_quantized_multiplier(v - input_zero_point, multiplier, shift)
                             + output_zero_point, INT8_MIN), INT8_MAX) for v in range(INT8_MIN, INT8_MAX + 1)], np.int8)


def logistic_table(input_scale: float, input_zero_point: int) -> np.ndarray:
    """LOGISTIC int8 (output scale 1/256, zero point -128): reference_integer_ops::Logistic, the input
    rescaled to Q4.27 with TFLite Micro's multiplier (frexp, no renormalization), gemmlowp's logistic."""
    integer_bits = 4
    fraction, left_shift = math.frexp(float(input_scale) * (1 << (31 - integer_bits)))
    multiplier = tflite_round(fraction * (1 << 31))
    radius = input_radius(integer_bits, left_shift)
    table = []
    for v in range(INT8_MIN, INT8_MAX + 1):
        x = v - input_zero_point
        if x <= -radius:
            table.append(INT8_MIN)
        elif x >= radius:
            table.append(INT8_MAX)
        else:
            q4 = multiply_by_quantized_multiplier(x, multiplier, left_shift)
            q23 = rounding_divide_by_pot(logistic(q4, integer_bits), 31 - 8)
            table.append(min(max(q23 - 128, INT8_MIN), INT8_MAX))
    return np.array(table, np.int8)


def _int16_srdhm(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul for int16."""
    if a == b == -(1 << 15):
        return (1 << 15) - 1
    product = a * b
    return _truncating_div(product + ((1 << 14) if product >= 0 else 1 - (1 << 14)), 1 << 15)


def _int16_saturating_left_shift(x: int, amount: int) -> int:
    return min(max(x * (1 << amount), -(1 << 15)), (1 << 15) - 1)


def _int16_multiplier(multiplier: int) -> int:
    """DownScaleInt32ToInt16Multiplier."""
    return (1 << 15) - 1 if multiplier >= INT32_MAX - (1 << 15) else (multiplier + (1 << 15)) >> 16


def hard_swish_table(input_scale: float, input_zero_point: int, output_scale: float,
                     output_zero_point: int) -> np.ndarray:
    """HARD_SWISH int8: reference_ops::HardSwish's 16-bit fixed point, with the multipliers TFLite Micro's
    Prepare computes in float32."""
    f32 = np.float32
    hires_input_scale = f32(1.0 / 128.0) * f32(input_scale)
    output_multiplier, output_exponent = quantize_multiplier(float(hires_input_scale / f32(output_scale)))
    reluish_multiplier, reluish_exponent = quantize_multiplier(float(hires_input_scale / f32(3.0 / 32768.0)))
    output_multiplier, reluish_multiplier = _int16_multiplier(output_multiplier), _int16_multiplier(reluish_multiplier)
    if output_exponent > 0:
        raise ValueError("hard swish output multiplier above 1")
    table = []
    for v in range(INT8_MIN, INT8_MAX + 1):
        hires = (v - input_zero_point) * (1 << 7)
        preshift_output = _int16_srdhm(hires, output_multiplier)
        reluish = hires
        if reluish_exponent > 0:
            reluish = _int16_saturating_left_shift(reluish, reluish_exponent - 1)
        reluish = _int16_srdhm(reluish, reluish_multiplier)
        if reluish_exponent > 0:
            reluish = _int16_saturating_left_shift(reluish, 1)
        if reluish_exponent < 0:
            reluish = rounding_divide_by_pot(reluish, -reluish_exponent)
        reluish = (reluish + (1 << 15)) >> 1
        # SaturatingDoublingHighMul: no rounding, the division truncates.
        product = (1 << 15) - 1 if reluish == preshift_output == -(1 << 15) else _truncating_div(
            reluish * preshift_output, 1 << 15)
        value = rounding_divide_by_pot(product, -output_exponent) + output_zero_point
        table.append(min(max(value, INT8_MIN), INT8_MAX))
    return np.array(table, np.int8)
