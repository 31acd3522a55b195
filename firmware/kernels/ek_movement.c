/* Data movement: TRANSPOSE and STRIDED_SLICE (a strided gather), PAD, CONCATENATION. */
#include "ek_arith.h"
#include "ek_kernels.h"

void ek_gather(const ek_gather_params *p, const void *input, void *output) {
  const uint8_t *in = (const uint8_t *)input;
  uint8_t *out = (uint8_t *)output;
  const int32_t size = p->element_bytes;
  int32_t index[5] = {0, 0, 0, 0, 0};
  int32_t total = 1;
  for (int32_t d = 0; d < p->rank; d++) total *= p->out_shape[d];
  for (int32_t n = 0; n < total; n++) {
    int32_t offset = p->in_start;
    for (int32_t d = 0; d < p->rank; d++) offset += index[d] * p->in_strides[d];
    memcpy(out, in + (size_t)offset * size, (size_t)size);
    out += size;
    for (int32_t d = p->rank - 1; d >= 0; d--) { /* the next output index, innermost first */
      if (++index[d] < p->out_shape[d]) break;
      index[d] = 0;
    }
  }
}

void ek_pad(const ek_pad_params *p, const void *input, void *output) {
  const uint8_t *in = (const uint8_t *)input;
  uint8_t *out = (uint8_t *)output;
  const int32_t size = p->element_bytes;
  for (int32_t n = 0; n < p->out_elements; n++) memcpy(out + (size_t)n * size, &p->pad_value, (size_t)size);
  const int32_t row = p->in_shape[p->rank - 1];
  int32_t index[5] = {0, 0, 0, 0, 0};
  int32_t rows = 1;
  for (int32_t d = 0; d < p->rank - 1; d++) rows *= p->in_shape[d];
  for (int32_t r = 0; r < rows; r++) {
    int32_t offset = p->out_start;
    for (int32_t d = 0; d < p->rank - 1; d++) offset += index[d] * p->out_strides[d];
    memcpy(out + (size_t)offset * size, in, (size_t)row * size);
    in += (size_t)row * size;
    for (int32_t d = p->rank - 2; d >= 0; d--) {
      if (++index[d] < p->in_shape[d]) break;
      index[d] = 0;
    }
  }
}

void ek_concat(int32_t outer, int32_t count, const int32_t *bytes, const void *const *inputs, void *output) {
  uint8_t *out = (uint8_t *)output;
  for (int32_t o = 0; o < outer; o++) {
    for (int32_t i = 0; i < count; i++) {
      memcpy(out, (const uint8_t *)inputs[i] + (size_t)o * bytes[i], (size_t)bytes[i]);
      out += bytes[i];
    }
  }
}
