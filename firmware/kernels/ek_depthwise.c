/* DEPTHWISE_CONV_2D. Each output row first copies the input rows its windows cover into a strip
 * padded with the input zero point, so every window lies inside the strip: no bounds tests, and
 * every accumulator starts from the interior bias, which holds the input offset's share (a padding
 * byte equal to the zero point then adds exactly nothing, as in TFLite). With depth multiplier 1
 * and channels in fours, each tap is one word of input and one of weights, expanded with SXTB16
 * and multiplied by halves (SMLABB/SMLATT); 3x3 windows are unrolled. */
#include "ek_arith.h"
#include "ek_kernels.h"
#include "ek_requant.h"

typedef struct {
  const int8_t *strip; /* k_h rows of strip_w pixels */
  int32_t row_step;    /* bytes from a strip row to the next */
  int32_t column_step; /* bytes from a tap to the next in a row */
} strip_window;

/* Four channels' accumulators. */
typedef struct {
  int32_t c0, c1, c2, c3;
} four_sums;

/* One tap of four channels: a word of input and one of weights expanded with SXTB16, one halfword
 * multiply-accumulate per channel. */
EK_INLINE void tap_four(four_sums *acc, uint32_t values, uint32_t weights) {
  const uint32_t x_even = ek_sxtb16(values), x_odd = ek_sxtb16_ror8(values);
  const uint32_t w_even = ek_sxtb16(weights), w_odd = ek_sxtb16_ror8(weights);
  acc->c0 = ek_smlabb(x_even, w_even, acc->c0);
  acc->c2 = ek_smlatt(x_even, w_even, acc->c2);
  acc->c1 = ek_smlabb(x_odd, w_odd, acc->c1);
  acc->c3 = ek_smlatt(x_odd, w_odd, acc->c3);
}

EK_INLINE four_sums start_four(const ek_depthwise_params *p, int32_t c) {
  const four_sums acc = {p->interior_bias[c], p->interior_bias[c + 1], p->interior_bias[c + 2],
                         p->interior_bias[c + 3]};
  return acc;
}

/* The four outputs, all requantized before any store (an int8 store may alias the constants). */
EK_INLINE void store_four(int8_t *out, int32_t c, const four_sums acc, const ek_requant rq, const int flags) {
  const int8_t v0 = ek_requant_output(rq, acc.c0, c, flags), v1 = ek_requant_output(rq, acc.c1, c + 1, flags);
  const int8_t v2 = ek_requant_output(rq, acc.c2, c + 2, flags), v3 = ek_requant_output(rq, acc.c3, c + 3, flags);
  out[c] = v0;
  out[c + 1] = v1;
  out[c + 2] = v2;
  out[c + 3] = v3;
}

EK_INLINE void four_channels(const ek_depthwise_params *p, const strip_window *w, const int8_t *origin, int32_t c,
                             int8_t *out, const ek_requant rq, const int flags) {
  const int32_t in_c = p->in_c, k_w = p->k_w;
  four_sums acc = start_four(p, c);
  const int8_t *k = p->weights + c;
  for (int32_t ky = 0; ky < p->k_h; ky++) {
    const int8_t *x = origin + ky * w->row_step + c;
    for (int32_t kx = 0; kx < k_w; kx++, x += w->column_step, k += in_c) tap_four(&acc, ek_load32(x), ek_load32(k));
  }
  store_four(out, c, acc, rq, flags);
}

/* The same for a 3x3 window without dilation, its nine taps unrolled. */
EK_INLINE void four_channels_3x3(const ek_depthwise_params *p, const strip_window *w, const int8_t *origin, int32_t c,
                                 int8_t *out, const ek_requant rq, const int flags) {
  const int32_t in_c = p->in_c, row_step = w->row_step;
  four_sums acc = start_four(p, c);
  const int8_t *x = origin + c, *k = p->weights + c;
#pragma GCC unroll 9
  for (int32_t tap = 0; tap < 9; tap++) {
    tap_four(&acc, ek_load32(x + (tap / 3) * row_step + (tap % 3) * in_c), ek_load32(k + tap * in_c));
  }
  store_four(out, c, acc, rq, flags);
}

/* Any depth multiplier, one output channel at a time. */
EK_INLINE void one_channel(const ek_depthwise_params *p, const strip_window *w, const int8_t *origin, int32_t oc,
                           int8_t *out, const ek_requant rq, const int flags) {
  const int32_t ic = oc / p->depth_multiplier, out_c = p->out_c;
  int32_t acc = p->interior_bias[oc];
  for (int32_t ky = 0; ky < p->k_h; ky++) {
    for (int32_t kx = 0; kx < p->k_w; kx++) {
      acc += origin[ky * w->row_step + kx * w->column_step + ic] * p->weights[(ky * p->k_w + kx) * out_c + oc];
    }
  }
  out[oc] = ek_requant_output(rq, acc, oc, flags);
}

/* The input rows under output row oy, padded with the zero point to the strip's width. */
static void fill_strip(const ek_depthwise_params *p, const int8_t *input, int32_t oy, int8_t *strip, int32_t strip_w) {
  const int32_t in_c = p->in_c, zero_point = -p->input_offset, row_bytes = strip_w * in_c;
  const int32_t inside = p->in_w < strip_w - p->pad_left ? p->in_w : strip_w - p->pad_left;
  for (int32_t r = 0; r < p->k_h; r++, strip += row_bytes) {
    const int32_t iy = oy * p->stride_h - p->pad_top + r * p->dil_h;
    if (iy < 0 || iy >= p->in_h || inside <= 0) {
      memset(strip, zero_point, (size_t)row_bytes);
      continue;
    }
    const int32_t left = p->pad_left * in_c, copied = inside * in_c;
    if (left) memset(strip, zero_point, (size_t)left);
    memcpy(strip + left, input + iy * p->in_w * in_c, (size_t)copied);
    if (row_bytes > left + copied) memset(strip + left + copied, zero_point, (size_t)(row_bytes - left - copied));
  }
}

EK_INLINE void depthwise(const ek_depthwise_params *p, const int8_t *input, int8_t *output, int8_t *strip,
                         const int flags) {
  const ek_requant rq = p->rq;
  const int32_t in_c = p->in_c, out_c = p->out_c;
  const int32_t strip_w = (p->out_w - 1) * p->stride_w + (p->k_w - 1) * p->dil_w + 1;
  const strip_window w = {strip, strip_w * in_c, p->dil_w * in_c};
  const int32_t fours = p->depth_multiplier == 1 ? out_c / 4 * 4 : 0;
  const int is_3x3 = p->k_h == 3 && p->k_w == 3 && p->dil_w == 1;
  for (int32_t oy = 0; oy < p->out_h; oy++) {
    fill_strip(p, input, oy, strip, strip_w);
    for (int32_t ox = 0; ox < p->out_w; ox++) {
      const int8_t *origin = strip + ox * p->stride_w * in_c;
      int8_t *out = output + (oy * p->out_w + ox) * out_c;
      int32_t c = 0;
      if (is_3x3) {
        for (; c < fours; c += 4) four_channels_3x3(p, &w, origin, c, out, rq, flags);
      } else {
        for (; c < fours; c += 4) four_channels(p, &w, origin, c, out, rq, flags);
      }
      for (; c < out_c; c++) one_channel(p, &w, origin, c, out, rq, flags);
    }
  }
}

void ek_depthwise_conv_s8(const ek_depthwise_params *p, const int8_t *input, int8_t *output, int8_t *scratch) {
#define DEPTHWISE(flags) depthwise(p, input, output, scratch, flags)
  EK_REQUANT_VARIANTS(ek_requant_flags(&p->rq), DEPTHWISE)
#undef DEPTHWISE
}
