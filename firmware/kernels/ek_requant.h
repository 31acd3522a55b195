/* Requantizing one output of a conv-like layer: TFLite's arithmetic, specialized at the call site
 * (always_inline with constant flags) for the layer's `exact` flag and for whether its activation
 * clamps inside int8's range (no activation, and most ReLUs, need only SSAT), with the layer's
 * constants read once into a local copy so the hot loop does not reload them after int8 stores.
 * EK_REQUANT_VARIANTS(call) expands `call` once per combination of the two flags. */
#ifndef EK_REQUANT_H
#define EK_REQUANT_H

#include "ek_arith.h"
#include "ek_kernels.h"

#define EK_EXACT 1
#define EK_CLAMP 2

EK_INLINE int8_t ek_requant_output(const ek_requant rq, int32_t acc, int32_t channel, const int flags) {
  const int32_t multiplier = rq.multiplier[channel], pre_shift = rq.pre_shift[channel];
  const int32_t right_shift_minus_one = rq.right_shift_minus_one[channel];
  int32_t value = (flags & EK_EXACT) ? ek_requantize_exact(acc, multiplier, pre_shift - 2 - right_shift_minus_one)
                                     : ek_requantize(acc, multiplier, pre_shift, right_shift_minus_one);
  value = ek_saturate8(value + rq.output_offset);
  if (flags & EK_CLAMP) {
    value = value < rq.act_min ? rq.act_min : value;
    value = value > rq.act_max ? rq.act_max : value;
  }
  return (int8_t)value;
}

/* The flags of a layer's requantization. */
EK_INLINE int ek_requant_flags(const ek_requant *rq) {
  return (rq->exact ? EK_EXACT : 0) | (rq->act_min > -128 || rq->act_max < 127 ? EK_CLAMP : 0);
}

#define EK_REQUANT_VARIANTS(flags, call) \
  switch (flags) {                      \
    case 0: call(0); break;             \
    case EK_EXACT: call(EK_EXACT); break; \
    case EK_CLAMP: call(EK_CLAMP); break; \
    default: call(EK_EXACT | EK_CLAMP); break; \
  }

#endif /* EK_REQUANT_H */
