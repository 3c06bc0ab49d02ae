// bfloat16 loops of the activation quantizer (paper §3.1): bfloat16 storage, float32
// arithmetic.
//
// Why float32: bfloat16 has 8 significant bits, so (2^k - 1) z and its rounding are
// not representable in it for k >= 8 or so; the reference formula casts the input up
// (exactly), quantizes in float32 and casts the result back to bfloat16 with
// round-to-nearest-even. These loops do the same in one pass: widen a chunk of
// bfloat16 to float32 (a 16-bit shift, exact), run the float32 loop of simd_loops.h
// on it, narrow with torch's rounding rule (c10::BFloat16's round_to_nearest_even),
// so values are bitwise equal to the reference (NaN stays NaN; its payload may differ
// from torch's vectorised cast).
//
// The clip mask needs no arithmetic: for a bfloat16 bit pattern b, 0 <= x <= 1 holds
// exactly for b <= 0x3F80 (+0 up to 1.0) and b == 0x8000 (-0.0); NaN patterns
// (0x7F81.. and 0xFF81..) and negatives fall outside.
#pragma once

#include <cstdint>
#include <cstring>

#include "simd_loops.h"

namespace lowbit {

constexpr int64_t kBf16Chunk = 512;  // floats per chunk: 2 KiB on the stack, in L1

LOWBIT_INLINE void bf16_widen(const uint16_t* __restrict__ x, float* __restrict__ out,
                              int64_t len) {
  uint32_t* __restrict__ o = reinterpret_cast<uint32_t*>(out);
  for (int64_t i = 0; i < len; ++i) o[i] = static_cast<uint32_t>(x[i]) << 16;
}

// float32 -> bfloat16, round to nearest even; NaN -> 0x7FC0 (as c10::BFloat16).
LOWBIT_INLINE void bf16_narrow(const float* __restrict__ in, uint16_t* __restrict__ y,
                               int64_t len) {
  const uint32_t* __restrict__ u = reinterpret_cast<const uint32_t*>(in);
  for (int64_t i = 0; i < len; ++i) {
    const uint32_t v = u[i];
    const bool nan = (v & 0x7FFFFFFFu) > 0x7F800000u;
    const uint16_t r = static_cast<uint16_t>((v + 0x7FFFu + ((v >> 16) & 1u)) >> 16);
    y[i] = nan ? uint16_t(0x7FC0) : r;
  }
}

LOWBIT_INLINE bool bf16_in_clip_range(uint16_t b) { return (b <= 0x3F80u) | (b == 0x8000u); }

template <int kBytes, bool kRound>
LOWBIT_INLINE void act_values_bf16_body(const uint16_t* __restrict__ x, uint16_t* __restrict__ y,
                                        int64_t len, float n) {
  alignas(64) float wide[kBf16Chunk];
  alignas(64) float out[kBf16Chunk];
  for (int64_t i = 0; i < len; i += kBf16Chunk) {
    const int64_t m = len - i < kBf16Chunk ? len - i : kBf16Chunk;
    bf16_widen(x + i, wide, m);
    act_values_body<float, kBytes, kRound>(wide, out, m, n);
    bf16_narrow(out, y + i, m);
  }
}

LOWBIT_INLINE void bf16_mask_body(const uint16_t* __restrict__ x, uint8_t* __restrict__ m,
                                  int64_t len) {
  for (int64_t i = 0; i < len; ++i) m[i] = bf16_in_clip_range(x[i]);
}

// In place: g = where(0 <= x <= 1, g, 0), as a bitwise AND (+0.0 where masked out).
LOWBIT_INLINE void bf16_grad_from_input_body(uint16_t* __restrict__ g,
                                             const uint16_t* __restrict__ x, int64_t len) {
  for (int64_t i = 0; i < len; ++i) g[i] &= uint16_t(0) - uint16_t(bf16_in_clip_range(x[i]));
}

// out = where(m, g, 0) on 2-byte elements.
LOWBIT_INLINE void bf16_masked_grad_body(const uint16_t* __restrict__ g,
                                         const uint8_t* __restrict__ m,
                                         uint16_t* __restrict__ out, int64_t len) {
  for (int64_t i = 0; i < len; ++i) out[i] = g[i] & (uint16_t(0) - uint16_t(m[i]));
}

// The AVX2 clone when the CPU has it, else the baseline one (as LOWBIT_DISPATCH).
#define LOWBIT_DISPATCH_BF16(NAME, BODY_AVX2, BODY_BASE, PARAMS, ARGS) \
  LOWBIT_AVX2 inline void NAME##_avx2 PARAMS { BODY_AVX2; }            \
  inline void NAME##_base PARAMS { BODY_BASE; }                        \
  inline void NAME PARAMS {                                            \
    if (has_avx2()) {                                                  \
      NAME##_avx2 ARGS;                                                \
    } else {                                                           \
      NAME##_base ARGS;                                                \
    }                                                                  \
  }

LOWBIT_DISPATCH_BF16(act_values_bf16_round, (act_values_bf16_body<32, true>(x, y, len, n)),
                     (act_values_bf16_body<16, true>(x, y, len, n)),
                     (const uint16_t* x, uint16_t* y, int64_t len, float n), (x, y, len, n))
LOWBIT_DISPATCH_BF16(act_values_bf16_clip, (act_values_bf16_body<32, false>(x, y, len, n)),
                     (act_values_bf16_body<16, false>(x, y, len, n)),
                     (const uint16_t* x, uint16_t* y, int64_t len, float n), (x, y, len, n))
LOWBIT_DISPATCH_BF16(clip_mask_bf16, (bf16_mask_body(x, m, len)), (bf16_mask_body(x, m, len)),
                     (const uint16_t* x, uint8_t* m, int64_t len), (x, m, len))
LOWBIT_DISPATCH_BF16(grad_from_input_bf16, (bf16_grad_from_input_body(g, x, len)),
                     (bf16_grad_from_input_body(g, x, len)),
                     (uint16_t * g, const uint16_t* x, int64_t len), (g, x, len))
LOWBIT_DISPATCH_BF16(masked_grad_bf16, (bf16_masked_grad_body(g, m, out, len)),
                     (bf16_masked_grad_body(g, m, out, len)),
                     (const uint16_t* g, const uint8_t* m, uint16_t* out, int64_t len),
                     (g, m, out, len))

// y = q_k(clip(x, 0, 1)) for bfloat16 bits x, y; n = 2^k - 1 in float32.
inline void act_values_bf16(const uint16_t* x, uint16_t* y, int64_t len, float n, bool round) {
  if (round) {
    act_values_bf16_round(x, y, len, n);
  } else {
    act_values_bf16_clip(x, y, len, n);
  }
}

}  // namespace lowbit
