// Vectorisable math for CPU kernels. GCC without -ffast-math calls libm's
// scalar expf per element, so loops over exp never vectorise; these are
// written in plain arithmetic with no float compares or selects (under the
// default -ftrapping-math GCC will not vectorise those either).
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

namespace keel::kernels::cpu {

// exp(x) for x <= 0 (softmax-style arguments: a value minus its row max or
// log-sum-exp). Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2, a
// polynomial for exp(r) (within 1 ulp of expf), 2^n in the exponent bits.
// x below -87.34, down to -inf (masked scores), gives 0 through an integer
// mask; NaN stays NaN. Arguments above 88 would overflow and are not expected.
inline float exp_nonpositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  constexpr uint32_t kUnderflow = std::bit_cast<uint32_t>(-87.33654f);
  constexpr uint32_t kMinusInf = std::bit_cast<uint32_t>(-std::numeric_limits<float>::infinity());
  const float big = x * kLog2e + kRound;
  const float n = big - kRound;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // round(x / ln2) sits in big's low mantissa bits; unsigned arithmetic keeps
  // out-of-range inputs defined (they are masked below).
  const uint32_t e = std::bit_cast<uint32_t>(big) - std::bit_cast<uint32_t>(kRound) + 127u;
  const float y = p * std::bit_cast<float>(e << 23);
  // Negative floats order by their bits as unsigned: x < -87.34 is a bit range.
  const uint32_t xb = std::bit_cast<uint32_t>(x);
  const bool under = xb > kUnderflow && xb <= kMinusInf;
  return std::bit_cast<float>(std::bit_cast<uint32_t>(y) & (under ? 0u : ~0u));
}

}  // namespace keel::kernels::cpu
