/* Elementwise ops with TFLite Micro's integer arithmetic: ADD, MUL (broadcasting over up to four
 * dimensions), table lookups for int8 -> int8 functions, QUANTIZE and DEQUANTIZE, MEAN over H and W. */
#include <math.h>

#include "ek_arith.h"
#include "ek_kernels.h"

EK_INLINE int32_t add_one(const ek_binary_params *p, int32_t a, int32_t b, const int fast) {
  const int32_t sum = p->table1[a + 128] + p->table2[b + 128];
  const int32_t value = fast ? ek_requantize(sum, p->output_multiplier, 1, -p->output_shift - 1)
                             : ek_requantize_exact(sum, p->output_multiplier, p->output_shift);
  return ek_clamp(value + p->output_offset, p->act_min, p->act_max);
}

EK_INLINE int32_t mul_one(const ek_binary_params *p, int32_t a, int32_t b, const int fast) {
  (void)fast;
  const int32_t product = (a + p->input1_offset) * (b + p->input2_offset);
  return ek_clamp(ek_requantize_exact(product, p->output_multiplier, p->output_shift) + p->output_offset, p->act_min,
                  p->act_max);
}

/* One binary op over the (broadcast) shape; a copy of the parameters keeps them out of memory that
 * int8 stores could alias. */
#define BINARY_LOOP(one, fast)                                                                                 \
  do {                                                                                                         \
    const ek_binary_params q = *p;                                                                             \
    if (q.same_shape) {                                                                                        \
      const int32_t count = q.shape[0] * q.shape[1] * q.shape[2] * q.shape[3];                                 \
      for (int32_t i = 0; i < count; i++) output[i] = (int8_t)one(&q, input1[i], input2[i], fast);             \
      break;                                                                                                   \
    }                                                                                                          \
    for (int32_t i0 = 0; i0 < q.shape[0]; i0++)                                                                \
      for (int32_t i1 = 0; i1 < q.shape[1]; i1++)                                                              \
        for (int32_t i2 = 0; i2 < q.shape[2]; i2++) {                                                          \
          const int8_t *a = input1 + i0 * q.strides1[0] + i1 * q.strides1[1] + i2 * q.strides1[2];             \
          const int8_t *b = input2 + i0 * q.strides2[0] + i1 * q.strides2[1] + i2 * q.strides2[2];             \
          for (int32_t i3 = 0; i3 < q.shape[3]; i3++)                                                          \
            *output++ = (int8_t)one(&q, a[i3 * q.strides1[3]], b[i3 * q.strides2[3]], fast);                   \
        }                                                                                                      \
  } while (0)

void ek_add_s8(const ek_binary_params *p, const int8_t *input1, const int8_t *input2, int8_t *output) {
  if (p->fast_output) {
    BINARY_LOOP(add_one, 1);
  } else {
    BINARY_LOOP(add_one, 0);
  }
}

void ek_mul_s8(const ek_binary_params *p, const int8_t *input1, const int8_t *input2, int8_t *output) {
  BINARY_LOOP(mul_one, 0);
}

void ek_lookup_s8(const int8_t *table, int32_t count, const int8_t *input, int8_t *output) {
  for (int32_t i = 0; i < count; i++) output[i] = table[input[i] + 128];
}

void ek_dequantize_s8(int32_t count, int32_t zero_point, float scale, const int8_t *input, float *output) {
  for (int32_t i = 0; i < count; i++) output[i] = (float)(input[i] - zero_point) * scale;
}

void ek_quantize_f32(int32_t count, int32_t zero_point, float scale, const float *input, int8_t *output) {
  for (int32_t i = 0; i < count; i++) {
    /* TFLite's AffineQuantize: the division in double (its scale is a double), rounded half away from
     * zero; clamped before the conversion so that no value is out of int32's range. */
    const double value = round((double)input[i] / (double)scale) + zero_point;
    output[i] = (int8_t)(value < -128.0 ? -128 : (value > 127.0 ? 127 : (int32_t)value));
  }
}

/* TFLite Micro's QuantizedMeanOrSum over H and W: the sum of the raw values less count times the zero
 * point, requantized with a multiplier that the build already divided by the count. */
void ek_mean_hw_s8(const ek_mean_params *p, const int8_t *input, int8_t *output) {
  const int32_t count = p->in_h * p->in_w;
  for (int32_t c = 0; c < p->channels; c++) {
    int32_t sum = 0;
    for (int32_t i = 0; i < count; i++) sum += input[i * p->channels + c];
    const int32_t value = ek_requantize_exact(sum + p->input_offset * count, p->multiplier, p->shift);
    output[c] = (int8_t)ek_clamp(value + p->output_offset, -128, 127);
  }
}
