/* SOFTMAX int8 -> int8 as TFLite Micro computes it (reference_ops::Softmax): the input difference
 * to the row's maximum rescaled to a Q5.26 fixed-point value, gemmlowp's exp on negative values,
 * a Q12.19 sum and gemmlowp's reciprocal. Every helper below is gemmlowp's, for int32. */
#include "ek_arith.h"
#include "ek_kernels.h"

#define SCALED_DIFF_INTEGER_BITS 5
#define ACCUMULATION_INTEGER_BITS 12

/* gemmlowp's SaturatingRoundingMultiplyByPOT with a positive exponent: a saturating left shift. */
static int32_t saturating_shift_left(int32_t x, int exponent) {
  const int32_t threshold = (int32_t)((1u << (31 - exponent)) - 1);
  if (x > threshold) return INT32_MAX;
  if (x < -threshold) return INT32_MIN;
  return (int32_t)((uint32_t)x << exponent);
}

/* exp(a) for a in [-1/4, 0), Q0.31 in and out. */
static int32_t exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a) {
  const int32_t constant_term = 1895147668;  /* exp(-1/8) */
  const int32_t constant_1_over_3 = 715827883;
  const int32_t x = a + (1 << 28); /* + 1/8 */
  const int32_t x2 = ek_srdhm(x, x);
  const int32_t x3 = ek_srdhm(x2, x);
  const int32_t x4 = ek_srdhm(x2, x2);
  const int32_t x4_over_4 = ek_rounding_divide_by_pot(x4, 2);
  const int32_t sum = ek_rounding_divide_by_pot(ek_srdhm(x4_over_4 + x3, constant_1_over_3) + x2, 1);
  return constant_term + ek_srdhm(constant_term, x + sum);
}

/* exp(a) for a <= 0 in Q5.26; the result in Q0.31. */
static int32_t exp_on_negative_values(int32_t a) {
  const int fractional_bits = 31 - SCALED_DIFF_INTEGER_BITS;
  const int32_t one_quarter = 1 << (fractional_bits - 2);
  const int32_t mask = one_quarter - 1;
  const int32_t a_mod_quarter_minus_one_quarter = (a & mask) - one_quarter;
  int32_t result = exp_on_interval_between_negative_one_quarter_and_0_excl(
      saturating_shift_left(a_mod_quarter_minus_one_quarter, SCALED_DIFF_INTEGER_BITS));
  const int32_t remainder = a_mod_quarter_minus_one_quarter - a;
  /* exp(-2^k) for k = -2 .. 4, in Q0.31 */
  static const int32_t multipliers[] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
  for (int k = 0; k < 7; k++) {
    if (remainder & (1 << (fractional_bits - 2 + k))) result = ek_srdhm(result, multipliers[k]);
  }
  return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + x) for x in [0, 1), Q0.31 in and out (Newton-Raphson, three steps). */
static int32_t one_over_one_plus_x_for_x_in_0_1(int32_t a) {
  const int64_t sum = (int64_t)a + INT32_MAX;
  const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
  const int32_t constant_48_over_17 = 1515870810, constant_neg_32_over_17 = -1010580540; /* Q2.29 */
  int32_t x = constant_48_over_17 + ek_srdhm(half_denominator, constant_neg_32_over_17);
  for (int i = 0; i < 3; i++) {
    const int32_t half_denominator_times_x = ek_srdhm(half_denominator, x);
    const int32_t one_minus_half_denominator_times_x = (1 << 29) - half_denominator_times_x;
    x = x + saturating_shift_left(ek_srdhm(x, one_minus_half_denominator_times_x), 2);
  }
  return saturating_shift_left(x, 1);
}

void ek_softmax_s8(const ek_softmax_params *p, const int8_t *input, int8_t *output) {
  for (int32_t row = 0; row < p->rows; row++, input += p->depth, output += p->depth) {
    int32_t max_in_row = -128;
    for (int32_t c = 0; c < p->depth; c++) {
      if (input[c] > max_in_row) max_in_row = input[c];
    }
    int32_t sum_of_exps = 0; /* Q12.19 */
    for (int32_t c = 0; c < p->depth; c++) {
      const int32_t diff = input[c] - max_in_row;
      if (diff >= p->diff_min) {
        const int32_t rescaled = ek_srdhm(diff * (1 << p->input_left_shift), p->input_multiplier);
        sum_of_exps += ek_rounding_divide_by_pot(exp_on_negative_values(rescaled), ACCUMULATION_INTEGER_BITS);
      }
    }
    /* gemmlowp's GetReciprocal */
    const int headroom_plus_one = __builtin_clz((uint32_t)sum_of_exps);
    const int num_bits_over_unit = ACCUMULATION_INTEGER_BITS - headroom_plus_one;
    const int32_t shifted_sum_minus_one = (int32_t)(((uint32_t)sum_of_exps << headroom_plus_one) - (1u << 31));
    const int32_t shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one);
    for (int32_t c = 0; c < p->depth; c++) {
      const int32_t diff = input[c] - max_in_row;
      if (diff >= p->diff_min) {
        const int32_t rescaled = ek_srdhm(diff * (1 << p->input_left_shift), p->input_multiplier);
        const int32_t exp_in_0 = exp_on_negative_values(rescaled);
        const int32_t unsaturated =
            ek_rounding_divide_by_pot(ek_srdhm(shifted_scale, exp_in_0), num_bits_over_unit + 31 - 8);
        output[c] = (int8_t)ek_clamp(unsaturated - 128, -128, 127);
      } else {
        output[c] = -128;
      }
    }
  }
}
