// Normal draws on the device that equal the CPU's philox_normal_at bit for
// bit. The CPU computes Box-Muller with the host libm's logf, sinf and cosf,
// which are not correctly rounded (glibc 2.36 differs from the correctly
// rounded result on about 0.7% of logf's inputs here), and CUDA's float
// functions differ from glibc's on other inputs. Their arguments, though,
// take only 2^24 values each: u = (k + 1) / 2^24 for logf and
// 2*pi*u (a float product) for sinf and cosf, k = word >> 8.
//
// So both sides compute the correctly rounded value, float(f(double(x))),
// and apply a 2-bit correction per (function, k) measured once on the host:
// 0 = the host's float function agrees, 1 = it gives the next float up,
// 2 = the next float down. float(f(double(x))) is correctly rounded on host
// and device alike because no exact f(x) in this domain lies within 9 double
// ulps of a float rounding boundary (checked exhaustively with long double;
// tests/cuda/philox_exact_test.cpp repeats the check), while CUDA's double
// log/sin/cos are within 2 ulps. Building the tables takes 3 * 2^24 libm
// calls (about a second, spread over the host's cores); they hold 4 MiB per
// function. If the host libm differs by more than one float step anywhere,
// LibmCodes::exact is false and device normals fall back to the host.
#pragma once

#include <math.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "core/philox.h"

namespace keel::cuda {

inline constexpr uint32_t kUniformValues = 1u << 24;              // distinct philox_uniform values
inline constexpr size_t kCodeBytes = size_t(kUniformValues) / 4;  // 2 bits each

KEEL_HD unsigned libm_code(const uint8_t* codes, uint32_t k) {
  return (codes[k >> 2] >> ((k & 3u) * 2u)) & 3u;
}

KEEL_HD float apply_libm_code(float x, unsigned code) {
  if (code == 1) return nextafterf(x, INFINITY);
  if (code == 2) return nextafterf(x, -INFINITY);
  return x;
}

// Single IEEE operations, never fused with a neighbour (the CPU's are not).
KEEL_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

KEEL_HD float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return sqrtf(a);
#endif
}

// float(d) for d = f(double(x)), kept apart from the call on the host: GCC
// may turn float(log(double(x))) into logf(x) under
// -funsafe-math-optimizations, which would defeat the point.
KEEL_HD float round_to_float(double d) {
#if defined(__CUDA_ARCH__)
  return float(d);
#else
  volatile double v = d;
  return float(v);
#endif
}

// The pieces of Box-Muller for one pair of Philox words: the radius from
// the first, the angle from the second.
KEEL_HD float box_muller_radius(uint32_t w1, const uint8_t* log_codes) {
  const float u1 = philox_uniform(w1);
  const float lg = apply_libm_code(round_to_float(log(double(u1))), libm_code(log_codes, w1 >> 8));
  return sqrt_rn(mul_rn(-2.0f, lg));
}

KEEL_HD float box_muller_angle(uint32_t w2) {
  return mul_rn(6.283185307179586f, philox_uniform(w2));
}

// Element i's standard normal draw, equal to philox_normal_at(seed, offset, i)
// on the host that built the codes.
KEEL_HD float philox_normal_exact_at(uint64_t seed, uint64_t offset, uint64_t i,
                                     const uint8_t* log_codes, const uint8_t* sin_codes,
                                     const uint8_t* cos_codes) {
  const Philox4 r = philox_block(seed, offset, i >> 2);
  const unsigned pair = unsigned(i & 2);
  const uint32_t w1 = r.v[pair], w2 = r.v[pair + 1];
  const float rad = box_muller_radius(w1, log_codes);
  const float ang = box_muller_angle(w2);
  const float t = (i & 1) ? apply_libm_code(round_to_float(sin(double(ang))), libm_code(sin_codes, w2 >> 8))
                          : apply_libm_code(round_to_float(cos(double(ang))), libm_code(cos_codes, w2 >> 8));
  return mul_rn(rad, t);
}

struct LibmCodes {
  std::vector<uint8_t> log, sin, cos;  // kCodeBytes each
  bool exact = true;                   // every input within one float step
  std::string problem;                 // the first input that was not, when !exact
};

namespace detail {

inline unsigned libm_diff_code(float host, float rounded, bool& ok) {
  if (host == rounded || (host != host && rounded != rounded)) return 0;
  if (host == nextafterf(rounded, INFINITY)) return 1;
  if (host == nextafterf(rounded, -INFINITY)) return 2;
  ok = false;
  return 0;
}

}  // namespace detail

// Measures the host libm against correctly rounded values over the whole
// domain (threads over blocks of k; each byte is written by one thread).
inline LibmCodes build_libm_codes() {
  LibmCodes c;
  c.log.assign(kCodeBytes, 0);
  c.sin.assign(kCodeBytes, 0);
  c.cos.assign(kCodeBytes, 0);
  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<uint32_t> bad(threads, kUniformValues);  // first failing k per thread
  auto work = [&](unsigned t) {
    const uint32_t per = (kUniformValues / 4 + threads - 1) / threads * 4;
    const uint32_t lo = t * per, hi = std::min<uint64_t>(uint64_t(lo) + per, kUniformValues);
    for (uint32_t k = lo; k < hi; ++k) {
      bool ok = true;
      const float u = philox_uniform(k << 8);
      const float ang = 6.283185307179586f * u;
      const unsigned cl = detail::libm_diff_code(logf(u), round_to_float(log(double(u))), ok);
      const unsigned cs = detail::libm_diff_code(sinf(ang), round_to_float(sin(double(ang))), ok);
      const unsigned cc = detail::libm_diff_code(cosf(ang), round_to_float(cos(double(ang))), ok);
      const unsigned shift = (k & 3u) * 2u;
      c.log[k >> 2] = uint8_t(c.log[k >> 2] | (cl << shift));
      c.sin[k >> 2] = uint8_t(c.sin[k >> 2] | (cs << shift));
      c.cos[k >> 2] = uint8_t(c.cos[k >> 2] | (cc << shift));
      if (!ok && bad[t] == kUniformValues) bad[t] = k;
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
  const uint32_t first = *std::min_element(bad.begin(), bad.end());
  if (first != kUniformValues) {
    c.exact = false;
    const float u = philox_uniform(first << 8);
    c.problem =
        "the host libm's logf/sinf/cosf differ from the correctly rounded value by "
        "more than one float step at u = " +
        std::to_string(u);
  }
  return c;
}

// The codes for this process's host libm, built on first use.
inline const LibmCodes& host_libm_codes() {
  static const LibmCodes codes = build_libm_codes();
  return codes;
}

}  // namespace keel::cuda
