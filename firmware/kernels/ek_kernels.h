/* edgeyard's int8 kernels for Cortex-M: the operators of TFLite int8 models with TFLite Micro's
 * arithmetic, bit for bit. The `kernels` backend (toolchain/backends/kernels/) compiles a model
 * into a static driver that calls these with constant parameter blocks it computed at build time:
 * requantization multipliers and shifts, packed weights, padding, activation bounds.
 *
 * Tensors are NHWC int8 in memory the driver planned; nothing here allocates. A kernel that needs
 * scratch memory receives it from the driver (the size is part of the plan).
 *
 * Weights of CONV_2D and FULLY_CONNECTED are packed by the build for the SXTB16 + SMLAD loop:
 * each row's K values padded with zeros to a multiple of four, output channels in pairs, the two
 * rows interleaved 4 by 4, each group of four stored as w0 w2 w1 w3 (SXTB16 of the word gives
 * w0,w1 and of the word rotated by 8 gives w2,w3). An odd last channel keeps its own row.
 */
#ifndef EK_KERNELS_H
#define EK_KERNELS_H

#include <stdint.h>

/* Per-output-channel requantization (see ek_arith.h). Kernels read it through ek_requant_output
 * (ek_arith.h's companion, ek_requant.h), specialized for `exact` once per layer. */
typedef struct {
  const int32_t *bias;       /* accumulator start per channel (TFLite's bias) */
  const int32_t *multiplier; /* per channel */
  const int8_t *pre_shift;   /* per channel: TFLite's left shift + 1 */
  const int8_t *right_shift_minus_one; /* per channel: TFLite's right shift - 1 */
  int32_t output_offset;     /* output zero point */
  int32_t act_min, act_max;  /* fused activation, in the output's integers */
  /* 1 when the fast requantization does not hold for every channel (an accumulator shifted by
   * pre_shift could overflow, or a right shift is 0): the layer takes ek_requantize_exact. Rare. */
  int32_t exact;
} ek_requant;

/* CONV_2D; also FULLY_CONNECTED as a 1x1 convolution over `in_w` = batch rows. */
typedef struct {
  int32_t in_h, in_w, in_c, out_h, out_w, out_c;
  int32_t k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
  int32_t input_offset; /* minus the input zero point */
  const int8_t *weights; /* packed, see above */
  ek_requant rq;
} ek_conv_params;

/* Scratch bytes ek_conv_s8 needs: two im2col columns of int16, their depth padded to fours. */
#define EK_CONV_SCRATCH_BYTES(k_h, k_w, in_c) (4 * (((k_h) * (k_w) * (in_c) + 3) & ~3))
void ek_conv_s8(const ek_conv_params *p, const int8_t *input, int8_t *output, int16_t *scratch);

/* DEPTHWISE_CONV_2D. Weights as TFLite stores them: [k_h][k_w][out_c]. */
typedef struct {
  int32_t in_h, in_w, in_c, out_h, out_w, out_c, depth_multiplier;
  int32_t k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
  int32_t input_offset;
  const int8_t *weights;
  /* bias + input_offset * (sum of the channel's weights): the accumulator start when the offset is
   * not added tap by tap (the kernel pads with the zero point, so it never is). */
  const int32_t *interior_bias;
  ek_requant rq;
} ek_depthwise_params;

/* Scratch bytes ek_depthwise_conv_s8 needs: k_h input rows of the windows' width, padded. */
#define EK_DEPTHWISE_SCRATCH_BYTES(k_h, k_w, dil_w, stride_w, out_w, in_c) \
  ((k_h) * (((out_w) - 1) * (stride_w) + ((k_w) - 1) * (dil_w) + 1) * (in_c))
void ek_depthwise_conv_s8(const ek_depthwise_params *p, const int8_t *input, int8_t *output, int8_t *scratch);

/* AVERAGE_POOL_2D and MAX_POOL_2D. */
typedef struct {
  int32_t in_h, in_w, channels, out_h, out_w;
  int32_t k_h, k_w, stride_h, stride_w, pad_top, pad_left;
  int32_t act_min, act_max;
} ek_pool_params;

#define EK_POOL_SCRATCH_BYTES(channels) (4 * (channels))
void ek_average_pool_s8(const ek_pool_params *p, const int8_t *input, int8_t *output, int32_t *scratch);
void ek_max_pool_s8(const ek_pool_params *p, const int8_t *input, int8_t *output);

/* Elementwise binary ops with broadcasting over up to 4 dimensions: an input's stride is 0 along
 * a dimension it broadcasts; `same_shape` inputs run as one flat loop. */
typedef struct {
  int32_t shape[4];
  int32_t strides1[4], strides2[4];
  int32_t same_shape;
  int32_t input1_offset, input2_offset, output_offset; /* MUL */
  /* ADD: each input's rescaled value (TFLite's (v - zero point) << 20, times its multiplier) for
   * every int8 v, at [v + 128]: the sum of two table entries is TFLite's raw_sum. */
  const int32_t *table1, *table2;
  int32_t output_multiplier, output_shift;
  int32_t fast_output; /* the output requantization fits ek_requantize (shift <= -1, sums below 2^30) */
  int32_t act_min, act_max;
} ek_binary_params;

void ek_add_s8(const ek_binary_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);
void ek_mul_s8(const ek_binary_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);

/* SOFTMAX over the last dimension, TFLite Micro's fixed-point exp (gemmlowp). */
typedef struct {
  int32_t rows, depth;
  int32_t input_multiplier, input_left_shift, diff_min;
} ek_softmax_params;

void ek_softmax_s8(const ek_softmax_params *p, const int8_t *input, int8_t *output);

/* An int8 -> int8 function of one value (LOGISTIC, HARD_SWISH, QUANTIZE with a new scale, ...):
 * a 256-entry table the build computed with TFLite Micro's arithmetic, indexed by value + 128. */
void ek_lookup_s8(const int8_t *table, int32_t count, const int8_t *input, int8_t *output);

/* DEQUANTIZE: (value - zero point) * scale as float. TFLite Micro multiplies in double and rounds the
 * product to float; the exact product of a float and a 9-bit integer fits a double, so one float
 * multiplication rounds it the same. */
void ek_dequantize_s8(int32_t count, int32_t zero_point, float scale, const int8_t *input, float *output);
/* QUANTIZE from float: round(value / scale) + zero point, saturated. */
void ek_quantize_f32(int32_t count, int32_t zero_point, float scale, const float *input, int8_t *output);

/* MEAN over axes 1 and 2 of a 1xHxWxC tensor (TFLite Micro's QuantizedMeanOrSum); `multiplier` and
 * `shift` already include the division by H * W. */
typedef struct {
  int32_t in_h, in_w, channels;
  int32_t input_offset, output_offset, multiplier, shift;
} ek_mean_params;

void ek_mean_hw_s8(const ek_mean_params *p, const int8_t *input, int8_t *output);

/* Data movement, for any element size. Up to 5 dimensions, outermost first. */
typedef struct {
  int32_t rank, element_bytes;
  int32_t out_shape[5];
  int32_t in_strides[5]; /* element stride in the input for a step along each output dimension */
  int32_t in_start;      /* element offset of the first element read */
} ek_gather_params;

/* TRANSPOSE and STRIDED_SLICE: output in order, input read at strided positions. */
void ek_gather(const ek_gather_params *p, const void *input, void *output);

/* PAD: the output filled with `pad_value`, then the input copied into its window. */
typedef struct {
  int32_t rank, element_bytes;
  int32_t in_shape[5];
  int32_t out_strides[5]; /* element strides of the output */
  int32_t out_start;      /* element offset of the input's first element in the output */
  int32_t out_elements;
  int32_t pad_value;
} ek_pad_params;

void ek_pad(const ek_pad_params *p, const void *input, void *output);

/* CONCATENATION of inputs with one quantization: `outer` blocks, each input contributing
 * `bytes[i]` per block. */
void ek_concat(int32_t outer, int32_t count, const int32_t *bytes, const void *const *inputs, void *output);

#endif /* EK_KERNELS_H */
