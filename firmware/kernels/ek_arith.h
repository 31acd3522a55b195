/* Integer arithmetic shared by the kernels: TFLite's requantization, bit for bit, and the DSP
 * instructions the inner loops use, with portable C equivalents for cores without the DSP
 * extension (Cortex-M0+/M3) and for host builds.
 *
 * TFLite (and TFLite Micro) requantize an int32 accumulator with MultiplyByQuantizedMultiplier:
 *     RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc << left, multiplier), right)
 * The build (toolchain/backends/kernels/lower.py) splits each TFLite shift into `pre_shift` =
 * left + 1 and `right_shift_minus_one` = right - 1; where acc << pre_shift cannot overflow for the
 * layer's accumulators and every right shift is at least 1, the rounding high multiply is one SMMULR:
 *     SaturatingRoundingDoublingHighMul(x, m) = (x * m + 2^30) >> 31 = ((2x) * m + 2^31) >> 32
 * (the nudge TFLite picks by sign gives the same result once its truncating division is written as
 * a floor; saturation needs x = m = INT32_MIN, and multipliers are positive). */
#ifndef EK_ARITH_H
#define EK_ARITH_H

#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define EK_DSP 1
#else
#define EK_DSP 0
#endif

#define EK_INLINE static inline __attribute__((always_inline))

/* A 32-bit word from any address (one LDR on cores that allow unaligned loads). */
EK_INLINE uint32_t ek_load32(const void *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

EK_INLINE void ek_store32(void *p, uint32_t v) { memcpy(p, &v, 4); }

#if EK_DSP
EK_INLINE uint32_t ek_sxtb16(uint32_t x) { return __sxtb16(x); }
EK_INLINE uint32_t ek_sxtb16_ror8(uint32_t x) {
  uint32_t result;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(result) : "r"(x));
  return result;
}
EK_INLINE int32_t ek_smlad(uint32_t x, uint32_t y, int32_t acc) { return __smlad(x, y, acc); }
EK_INLINE int32_t ek_smlabb(uint32_t x, uint32_t y, int32_t acc) { return __smlabb(x, y, acc); }
EK_INLINE int32_t ek_smlatt(uint32_t x, uint32_t y, int32_t acc) { return __smlatt(x, y, acc); }
EK_INLINE uint32_t ek_sadd16(uint32_t x, uint32_t y) { return __sadd16(x, y); }
EK_INLINE int32_t ek_smmulr(int32_t x, int32_t y) {
  int32_t result;
  __asm__("smmulr %0, %1, %2" : "=r"(result) : "r"(x), "r"(y));
  return result;
}
#else
EK_INLINE uint32_t ek_sxtb16(uint32_t x) {
  return (uint32_t)(uint16_t)(int16_t)(int8_t)x | ((uint32_t)(uint16_t)(int16_t)(int8_t)(x >> 16) << 16);
}
EK_INLINE uint32_t ek_sxtb16_ror8(uint32_t x) { return ek_sxtb16((x >> 8) | (x << 24)); }
EK_INLINE int32_t ek_smlad(uint32_t x, uint32_t y, int32_t acc) {
  return acc + (int16_t)x * (int16_t)y + (int16_t)(x >> 16) * (int16_t)(y >> 16);
}
EK_INLINE int32_t ek_smlabb(uint32_t x, uint32_t y, int32_t acc) { return acc + (int16_t)x * (int16_t)y; }
EK_INLINE int32_t ek_smlatt(uint32_t x, uint32_t y, int32_t acc) {
  return acc + (int16_t)(x >> 16) * (int16_t)(y >> 16);
}
EK_INLINE uint32_t ek_sadd16(uint32_t x, uint32_t y) {
  return (uint32_t)(uint16_t)((int16_t)x + (int16_t)y) | ((uint32_t)(uint16_t)((int16_t)(x >> 16) + (int16_t)(y >> 16)) << 16);
}
EK_INLINE int32_t ek_smmulr(int32_t x, int32_t y) { return (int32_t)(((int64_t)x * y + 0x80000000LL) >> 32); }
#endif

/* Two signed halfwords (low, high) in one word. */
EK_INLINE uint32_t ek_pack16(int32_t low, int32_t high) { return (uint16_t)low | ((uint32_t)high << 16); }

EK_INLINE int32_t ek_clamp(int32_t x, int32_t low, int32_t high) { return x < low ? low : (x > high ? high : x); }

/* TFLite's MultiplyByQuantizedMultiplier with the shift pre-split (see the top of this file), for
 * right shifts r >= 1, given as r - 1. RoundingDivideByPOT(x, r) rounds half away from zero:
 * floor((x + 2^(r-1) - [x < 0]) / 2^r), which is (((x - [x < 0]) >> (r - 1)) + 1) >> 1. */
EK_INLINE int32_t ek_requantize(int32_t acc, int32_t multiplier, int32_t pre_shift, int32_t right_shift_minus_one) {
  const int32_t x = ek_smmulr(acc << pre_shift, multiplier);
  return (((x + (x >> 31)) >> right_shift_minus_one) + 1) >> 1;
}

/* x saturated to int8: one SSAT on cores with the saturation instructions (ARMv7-M and up, the
 * Cortex-M3 included, which lacks the DSP extension and so gets arm_acle.h here). */
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
#include <arm_acle.h>
EK_INLINE int32_t ek_saturate8(int32_t x) { return __ssat(x, 8); }
#else
EK_INLINE int32_t ek_saturate8(int32_t x) { return x < -128 ? -128 : (x > 127 ? 127 : x); }
#endif

/* gemmlowp's SaturatingRoundingDoublingHighMul, for operands with no range guarantee. */
EK_INLINE int32_t ek_srdhm(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  return (int32_t)(((int64_t)a * b + (1 << 30)) >> 31);
}

/* gemmlowp's RoundingDivideByPOT, for any x. */
EK_INLINE int32_t ek_rounding_divide_by_pot(int32_t x, int32_t exponent) {
  const int32_t mask = (int32_t)((1LL << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* MultiplyByQuantizedMultiplier with TFLite's signed shift, for any accumulator and shift. */
EK_INLINE int32_t ek_requantize_exact(int32_t acc, int32_t multiplier, int32_t shift) {
  const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  return ek_rounding_divide_by_pot(ek_srdhm((int32_t)((uint32_t)acc << left), multiplier), right);
}

#endif /* EK_ARITH_H */
