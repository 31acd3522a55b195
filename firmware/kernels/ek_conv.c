/* CONV_2D and FULLY_CONNECTED: im2col into int16 columns (input offset added), then a GEMM whose
 * inner loop does two output channels x two pixels with SXTB16 + SMLAD: 16 MACs per 2 weight
 * words expanded and 4 column words loaded. The depth is padded to a multiple of four (zero
 * weights), so there is no tail loop. */
#include "ek_arith.h"
#include "ek_kernels.h"
#include "ek_requant.h"

/* n int8 values as int16 with `offset` added. */
static void expand(const int8_t *source, int32_t n, int32_t offset, int16_t *destination) {
  int32_t i = 0;
#if EK_DSP
  const uint32_t offset2 = ek_pack16(offset, offset);
  for (; i + 4 <= n; i += 4) {
    const uint32_t word = ek_load32(source + i);
    const uint32_t even = ek_sadd16(ek_sxtb16(word), offset2);     /* x0, x2 */
    const uint32_t odd = ek_sadd16(ek_sxtb16_ror8(word), offset2); /* x1, x3 */
    ek_store32(destination + i, (even & 0xFFFFu) | (odd << 16));
    ek_store32(destination + i + 2, (odd & 0xFFFF0000u) | (even >> 16));
  }
#endif
  for (; i < n; i++) destination[i] = (int16_t)(source[i] + offset);
}

/* One output pixel's receptive field as int16 (value + input_offset; 0 where the window leaves the
 * input, which is the zero point in TFLite's padding). Without dilation, the taps of a window row
 * that lie inside the input are one contiguous run of the input row. */
static void im2col(const ek_conv_params *p, const int8_t *input, int32_t pixel, int16_t *column) {
  const int32_t in_h = p->in_h, in_w = p->in_w, channels = p->in_c, k_w = p->k_w, dil_w = p->dil_w;
  const int32_t offset = p->input_offset, row_length = k_w * channels;
  const int32_t oy = pixel / p->out_w, ox = pixel - oy * p->out_w;
  const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
  for (int32_t ky = 0; ky < p->k_h; ky++, column += row_length) {
    const int32_t iy = iy0 + ky * p->dil_h;
    if (iy < 0 || iy >= in_h) {
      memset(column, 0, (size_t)row_length * sizeof *column);
      continue;
    }
    const int8_t *row = input + iy * in_w * channels;
    if (dil_w == 1) {
      const int32_t first = ix0 < 0 ? (-ix0 < k_w ? -ix0 : k_w) : 0;
      const int32_t end = in_w - ix0 < k_w ? (in_w - ix0 > first ? in_w - ix0 : first) : k_w;
      memset(column, 0, (size_t)(first * channels) * sizeof *column);
      expand(row + (ix0 + first) * channels, (end - first) * channels, offset, column + first * channels);
      memset(column + end * channels, 0, (size_t)((k_w - end) * channels) * sizeof *column);
      continue;
    }
    for (int32_t kx = 0; kx < k_w; kx++) {
      const int32_t ix = ix0 + kx * dil_w;
      if (ix < 0 || ix >= in_w) {
        memset(column + kx * channels, 0, (size_t)channels * sizeof *column);
      } else {
        expand(row + ix * channels, channels, offset, column + kx * channels);
      }
    }
  }
}

/* Every output channel of two pixels: channels in pairs, 2 x 2 accumulators, SMLAD on int16 column
 * pairs against weight pairs expanded with SXTB16. */
EK_INLINE void gemm_two_pixels(const ek_conv_params *p, int32_t depth, const int16_t *column0,
                               const int16_t *column1, int8_t *out0, int8_t *out1, const int flags) {
  const ek_requant rq = p->rq;
  const int8_t *weights = p->weights;
  const int32_t groups = depth >> 2, out_c = p->out_c;
  int32_t channel = 0;
  for (; channel + 2 <= out_c; channel += 2) {
    int32_t acc00 = rq.bias[channel], acc10 = rq.bias[channel + 1];
    int32_t acc01 = acc00, acc11 = acc10;
    const int16_t *x0 = column0, *x1 = column1;
#pragma GCC unroll 2
    for (int32_t g = 0; g < groups; g++) {
      const uint32_t a0 = ek_load32(x0), a1 = ek_load32(x0 + 2);
      const uint32_t b0 = ek_load32(x1), b1 = ek_load32(x1 + 2);
      x0 += 4;
      x1 += 4;
      const uint32_t w0 = ek_load32(weights), w1 = ek_load32(weights + 4);
      weights += 8;
      uint32_t low = ek_sxtb16(w0), high = ek_sxtb16_ror8(w0);
      acc00 = ek_smlad(a0, low, acc00);
      acc00 = ek_smlad(a1, high, acc00);
      acc01 = ek_smlad(b0, low, acc01);
      acc01 = ek_smlad(b1, high, acc01);
      low = ek_sxtb16(w1);
      high = ek_sxtb16_ror8(w1);
      acc10 = ek_smlad(a0, low, acc10);
      acc10 = ek_smlad(a1, high, acc10);
      acc11 = ek_smlad(b0, low, acc11);
      acc11 = ek_smlad(b1, high, acc11);
    }
    /* All four values before any store: an int8 store may alias anything, and would make the
     * compiler load the channels' constants again. */
    const int8_t value00 = ek_requant_output(rq, acc00, channel, flags);
    const int8_t value01 = ek_requant_output(rq, acc01, channel, flags);
    const int8_t value10 = ek_requant_output(rq, acc10, channel + 1, flags);
    const int8_t value11 = ek_requant_output(rq, acc11, channel + 1, flags);
    out0[channel] = value00;
    out0[channel + 1] = value10;
    out1[channel] = value01;
    out1[channel + 1] = value11;
  }
  if (channel < out_c) { /* the odd last channel: its own row */
    int32_t acc0 = rq.bias[channel], acc1 = acc0;
    const int16_t *x0 = column0, *x1 = column1;
    for (int32_t g = 0; g < groups; g++, x0 += 4, x1 += 4, weights += 4) {
      const uint32_t w = ek_load32(weights), low = ek_sxtb16(w), high = ek_sxtb16_ror8(w);
      acc0 = ek_smlad(ek_load32(x0), low, acc0);
      acc0 = ek_smlad(ek_load32(x0 + 2), high, acc0);
      acc1 = ek_smlad(ek_load32(x1), low, acc1);
      acc1 = ek_smlad(ek_load32(x1 + 2), high, acc1);
    }
    const int8_t value0 = ek_requant_output(rq, acc0, channel, flags);
    const int8_t value1 = ek_requant_output(rq, acc1, channel, flags);
    out0[channel] = value0;
    out1[channel] = value1;
  }
}

/* Every output channel of one pixel (the last of an odd count, or a fully connected layer's row). */
EK_INLINE void gemm_one_pixel(const ek_conv_params *p, int32_t depth, const int16_t *column, int8_t *out,
                              const int flags) {
  const ek_requant rq = p->rq;
  const int8_t *weights = p->weights;
  const int32_t groups = depth >> 2, out_c = p->out_c;
  int32_t channel = 0;
  for (; channel + 2 <= out_c; channel += 2) {
    int32_t acc0 = rq.bias[channel], acc1 = rq.bias[channel + 1];
    const int16_t *x = column;
#pragma GCC unroll 2
    for (int32_t g = 0; g < groups; g++) {
      const uint32_t a0 = ek_load32(x), a1 = ek_load32(x + 2);
      x += 4;
      const uint32_t w0 = ek_load32(weights), w1 = ek_load32(weights + 4);
      weights += 8;
      acc0 = ek_smlad(a0, ek_sxtb16(w0), acc0);
      acc0 = ek_smlad(a1, ek_sxtb16_ror8(w0), acc0);
      acc1 = ek_smlad(a0, ek_sxtb16(w1), acc1);
      acc1 = ek_smlad(a1, ek_sxtb16_ror8(w1), acc1);
    }
    const int8_t value0 = ek_requant_output(rq, acc0, channel, flags);
    const int8_t value1 = ek_requant_output(rq, acc1, channel + 1, flags);
    out[channel] = value0;
    out[channel + 1] = value1;
  }
  if (channel < out_c) {
    int32_t acc = rq.bias[channel];
    const int16_t *x = column;
    for (int32_t g = 0; g < groups; g++, x += 4, weights += 4) {
      const uint32_t w = ek_load32(weights);
      acc = ek_smlad(ek_load32(x), ek_sxtb16(w), acc);
      acc = ek_smlad(ek_load32(x + 2), ek_sxtb16_ror8(w), acc);
    }
    out[channel] = ek_requant_output(rq, acc, channel, flags);
  }
}

EK_INLINE void conv(const ek_conv_params *p, const int8_t *input, int8_t *output, int16_t *scratch,
                    const int flags) {
  /* The depth padded to whole groups of four: the weights carry zeros there, the columns too. */
  const int32_t window = p->k_h * p->k_w * p->in_c, depth = (window + 3) & ~3, out_c = p->out_c;
  int16_t *column0 = scratch, *column1 = scratch + depth;
  for (int32_t i = window; i < depth; i++) column0[i] = column1[i] = 0;
  const int32_t pixels = p->out_h * p->out_w;
  int32_t pixel = 0;
  for (; pixel + 2 <= pixels; pixel += 2) {
    im2col(p, input, pixel, column0);
    im2col(p, input, pixel + 1, column1);
    gemm_two_pixels(p, depth, column0, column1, output + pixel * out_c, output + (pixel + 1) * out_c, flags);
  }
  if (pixel < pixels) {
    im2col(p, input, pixel, column0);
    gemm_one_pixel(p, depth, column0, output + pixel * out_c, flags);
  }
}

void ek_conv_s8(const ek_conv_params *p, const int8_t *input, int8_t *output, int16_t *scratch) {
#define CONV(flags) conv(p, input, output, scratch, flags)
  EK_REQUANT_VARIANTS(ek_requant_flags(&p->rq), CONV)
#undef CONV
}
