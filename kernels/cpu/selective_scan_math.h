// Pieces shared by the CPU selective scan's forward and backward
// (kernels/cpu/selective_scan*.cpp): vectorisable softplus, sigmoid and
// SiLU (plain arithmetic and bit operations only, see vec_math.h), the step
// sizes of one chunk, and B, C (B, N, T) transposed to (B, T, N) so that the
// loop over the state is over contiguous memory.
//
// The forward and the backward's recomputation must produce the same states
// bit for bit; both take dt from chunk_dt below and update a state as
// x = exp(dt * A) * x + (dt * u) * B, written identically in both files.
#pragma once

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "kernels/cpu/vec_math.h"
#include "kernels/selective_scan_dense.h"

// On x86-64 builds without -march=native the row loops are compiled three
// times, for the baseline, for AVX2 + FMA and for AVX-512, and the widest the
// CPU has runs (8 or 16 lanes and fused multiply-adds: 2x and more on the
// state loop). The forward and the backward choose alike, so their states
// agree bit for bit; results may differ in the last bits between machines.
#if defined(__x86_64__) && !defined(__AVX2__)
#define KEEL_SCAN_MULTI_ISA 1
#endif

namespace keel::kernels::cpu::scan {

#ifdef KEEL_SCAN_MULTI_ISA
enum class Isa { kBase, kAvx2, kAvx512 };
// The widest the CPU has; KEEL_SCAN_ISA=base or =avx2 caps it (so the tests
// reach every path on one machine).
inline Isa isa() {
  static const Isa best = __builtin_cpu_supports("avx512f") ? Isa::kAvx512
                          : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                              ? Isa::kAvx2
                              : Isa::kBase;
  const char* cap = std::getenv("KEEL_SCAN_ISA");
  if (cap && std::string_view(cap) == "base") return Isa::kBase;
  if (cap && std::string_view(cap) == "avx2" && best == Isa::kAvx512) return Isa::kAvx2;
  return best;
}
#endif

[[gnu::always_inline]] inline float abs_bits(float x) {
  return std::bit_cast<float>(std::bit_cast<uint32_t>(x) & 0x7fffffffu);
}

// exp(x) for x <= 88: exp_nonpositive's reduction and polynomial hold for
// positive arguments too (2^n stays a normal float up to n = 127); larger x
// overflows f32 anyway. dt * A is <= 0 in Mamba (dt >= 0, A = -exp(A_log)).
[[gnu::always_inline]] inline float exp_f32(float x) { return exp_nonpositive(x); }

// log(1 + e) for e in [0, 1], as 2 atanh(s) with s = e / (2 + e) in [0, 1/3]:
// the odd series to s^15 leaves a relative error below 2e-9.
[[gnu::always_inline]] inline float log1p_unit(float e) {
  const float s = e / (2.0f + e), s2 = s * s;
  float p = 1.0f / 15.0f;
  p = p * s2 + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  return 2.0f * (s + s * s2 * p);
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), no overflow for any x.
[[gnu::always_inline]] inline float softplus(float x) {
  const float ax = abs_bits(x);
  return 0.5f * (x + ax) + log1p_unit(exp_f32(-ax));
}

// sigmoid(x): 1 / (1 + e) for x >= 0 and e / (1 + e) below, e = exp(-|x|),
// chosen by the sign bit (no compare), so small values keep their precision.
[[gnu::always_inline]] inline float sigmoid(float x) {
  const float e = exp_f32(-abs_bits(x));
  const float r = 1.0f / (1.0f + e), t = e * r;
  const uint32_t neg = 0u - (std::bit_cast<uint32_t>(x) >> 31);  // all ones when x < 0
  return std::bit_cast<float>((std::bit_cast<uint32_t>(r) & ~neg) |
                              (std::bit_cast<uint32_t>(t) & neg));
}

// The step sizes of steps [t0, t0 + n) of one (b, d) row: delta + bias, then
// softplus if asked.
[[gnu::always_inline]] inline void chunk_dt(const float* delta, int64_t n, float bias,
                                            bool softplus_on, float* dt) {
  if (softplus_on) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dt[i] = softplus(delta[i] + bias);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dt[i] = delta[i] + bias;
  }
}

// (B, N, T) -> (B, T, N), dense f32.
inline std::vector<float> to_btn(const Tensor& x, int64_t batch, int64_t nstate, int64_t len) {
  std::vector<float> out(size_t(batch * len * nstate));
  const float* p = x.data<float>();
#pragma omp parallel for schedule(static) if (batch * len * nstate >= 32768)
  for (int64_t bt = 0; bt < batch * len; ++bt) {
    const int64_t b = bt / len, t = bt % len;
    const float* src = p + b * nstate * len + t;
    float* dst = out.data() + bt * nstate;
    for (int64_t n = 0; n < nstate; ++n) dst[n] = src[n * len];
  }
  return out;
}

}  // namespace keel::kernels::cpu::scan
