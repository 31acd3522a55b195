/* Elementwise ops with TFLite Micro's integer arithmetic: ADD, MUL (broadcasting over up to four
 * dimensions), table lookups for int8 -> int8 functions, QUANTIZE and DEQUANTIZE, MEAN over H and W. */
#include <math.h>

#include "ek_arith.h"
#include "ek_kernels.h"

EK_INLINE int32_t add_one(const ek_binary_params *p, int32_t a, int32_t b) {
  const int32_t x = (int32_t)((uint32_t)(a + p->input1_offset) << p->left_shift);
  const int32_t y = (int32_t)((uint32_t)(b + p->input2_offset) << p->left_shift);
  const int32_t sum = ek_requantize_exact(x, p->input1_multiplier, p->input1_shift) +
                      ek_requantize_exact(y, p->input2_multiplier, p->input2_shift);
  return ek_clamp(ek_requantize_exact(sum, p->output_multiplier, p->output_shift) + p->output_offset, p->act_min,
                  p->act_max);
}

EK_INLINE int32_t mul_one(const ek_binary_params *p, int32_t a, int32_t b) {
  const int32_t product = (a + p->input1_offset) * (b + p->input2_offset);
  return ek_clamp(ek_requantize_exact(product, p->output_multiplier, p->output_shift) + p->output_offset, p->act_min,
                  p->act_max);
}

#define BINARY_LOOP(one)                                                                                           \
  for (int32_t i0 = 0; i0 < p->shape[0]; i0++)                                                                     \
    for (int32_t i1 = 0; i1 < p->shape[1]; i1++)                                                                   \
      for (int32_t i2 = 0; i2 < p->shape[2]; i2++) {                                                               \
        const int8_t *a = input1 + i0 * p->strides1[0] + i1 * p->strides1[1] + i2 * p->strides1[2];                \
        const int8_t *b = input2 + i0 * p->strides2[0] + i1 * p->strides2[1] + i2 * p->strides2[2];                \
        for (int32_t i3 = 0; i3 < p->shape[3]; i3++) *output++ = (int8_t)one(p, a[i3 * p->strides1[3]], b[i3 * p->strides2[3]]); \
      }

void ek_add_s8(const ek_binary_params *p, const int8_t *input1, const int8_t *input2, int8_t *output) {
  BINARY_LOOP(add_one)
}

void ek_mul_s8(const ek_binary_params *p, const int8_t *input1, const int8_t *input2, int8_t *output) {
  BINARY_LOOP(mul_one)
}

void ek_lookup_s8(const int8_t *table, int32_t count, const int8_t *input, int8_t *output) {
  for (int32_t i = 0; i < count; i++) output[i] = table[input[i] + 128];
}

void ek_dequantize_s8(int32_t count, int32_t zero_point, float scale, const int8_t *input, float *output) {
  for (int32_t i = 0; i < count; i++) output[i] = (float)(input[i] - zero_point) * scale;
}

void ek_quantize_f32(int32_t count, int32_t zero_point, float scale, const float *input, int8_t *output) {
  for (int32_t i = 0; i < count; i++) {
    /* TFLite's AffineQuantize: round half away from zero of value / scale. */
    const int32_t value = (int32_t)roundf(input[i] / scale) + zero_point;
    output[i] = (int8_t)ek_clamp(value, -128, 127);
  }
}

void ek_mean_hw_s8(const ek_mean_params *p, const int8_t *input, int8_t *output) {
  const int32_t count = p->in_h * p->in_w;
  for (int32_t c = 0; c < p->channels; c++) {
    int32_t acc = 0;
    for (int32_t i = 0; i < count; i++) acc += input[i * p->channels + c] + p->input_offset;
    acc = ek_requantize_exact(acc, p->multiplier, p->shift);
    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
    output[c] = (int8_t)ek_clamp(acc + p->output_offset, -128, 127);
  }
}
