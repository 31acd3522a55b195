/* AVERAGE_POOL_2D and MAX_POOL_2D over the part of each window inside the input, as TFLite Micro:
 * the average divides by the number of values summed, rounding half away from zero. */
#include "ek_arith.h"
#include "ek_kernels.h"

/* The window of output (oy, ox) clipped to the input: rows [*y0, *y1), columns [*x0, *x1). */
static void window(const ek_pool_params *p, int32_t oy, int32_t ox, int32_t *y0, int32_t *y1, int32_t *x0, int32_t *x1) {
  const int32_t iy = oy * p->stride_h - p->pad_top, ix = ox * p->stride_w - p->pad_left;
  *y0 = iy < 0 ? 0 : iy;
  *y1 = iy + p->k_h > p->in_h ? p->in_h : iy + p->k_h;
  *x0 = ix < 0 ? 0 : ix;
  *x1 = ix + p->k_w > p->in_w ? p->in_w : ix + p->k_w;
}

void ek_average_pool_s8(const ek_pool_params *p, const int8_t *input, int8_t *output, int32_t *sums) {
  const int32_t channels = p->channels;
  for (int32_t oy = 0; oy < p->out_h; oy++) {
    for (int32_t ox = 0; ox < p->out_w; ox++) {
      int32_t y0, y1, x0, x1;
      window(p, oy, ox, &y0, &y1, &x0, &x1);
      memset(sums, 0, (size_t)channels * sizeof *sums);
      for (int32_t y = y0; y < y1; y++) {
        for (int32_t x = x0; x < x1; x++) {
          const int8_t *values = input + (y * p->in_w + x) * channels;
          for (int32_t c = 0; c < channels; c++) sums[c] += values[c];
        }
      }
      const int32_t count = (y1 - y0) * (x1 - x0);
      int8_t *out = output + (oy * p->out_w + ox) * channels;
      for (int32_t c = 0; c < channels; c++) {
        const int32_t sum = sums[c];
        const int32_t average = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
        out[c] = (int8_t)ek_clamp(average, p->act_min, p->act_max);
      }
    }
  }
}

void ek_max_pool_s8(const ek_pool_params *p, const int8_t *input, int8_t *output) {
  const int32_t channels = p->channels;
  for (int32_t oy = 0; oy < p->out_h; oy++) {
    for (int32_t ox = 0; ox < p->out_w; ox++) {
      int32_t y0, y1, x0, x1;
      window(p, oy, ox, &y0, &y1, &x0, &x1);
      int8_t *out = output + (oy * p->out_w + ox) * channels;
      for (int32_t c = 0; c < channels; c++) {
        int32_t largest = -128;
        for (int32_t y = y0; y < y1; y++) {
          for (int32_t x = x0; x < x1; x++) {
            const int32_t value = input[(y * p->in_w + x) * channels + c];
            if (value > largest) largest = value;
          }
        }
        out[c] = (int8_t)ek_clamp(largest, p->act_min, p->act_max);
      }
    }
  }
}
