// The premises of device normal draws equal to the CPU's
// (core/cuda/philox_exact.h), checked on the host, so they run without a GPU:
//   - this host's libm is within one float step of correct rounding on the
//     whole Box-Muller domain (the 2-bit corrections can describe it);
//   - the corrected formula, run on the host, gives philox_normal_at's bits;
//   - no exact log/sin/cos value in the domain lies near a float rounding
//     boundary, so float(f(double(x))) is correctly rounded for any double
//     f within a few ulps (glibc's on the host, CUDA's on the device).
#include "core/cuda/philox_exact.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

namespace keel {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(PhiloxExact, HostLibmIsWithinOneStepOfCorrectRounding) {
  const cuda::LibmCodes& c = cuda::host_libm_codes();
  EXPECT_TRUE(c.exact) << c.problem;
  ASSERT_EQ(c.log.size(), cuda::kCodeBytes);
  ASSERT_EQ(c.sin.size(), cuda::kCodeBytes);
  ASSERT_EQ(c.cos.size(), cuda::kCodeBytes);
}

TEST(PhiloxExact, CorrectedFormulaGivesTheCpuDraws) {
  const cuda::LibmCodes& c = cuda::host_libm_codes();
  ASSERT_TRUE(c.exact) << c.problem;
  for (uint64_t seed : {uint64_t(0), uint64_t(42), (uint64_t(1) << 40) + 3}) {
    for (uint64_t offset : {uint64_t(0), uint64_t(7)}) {
      int bad = 0;
      for (uint64_t i = 0; i < (uint64_t(1) << 18); ++i) {
        const float want = philox_normal_at(seed, offset, i);
        const float got =
            cuda::philox_normal_exact_at(seed, offset, i, c.log.data(), c.sin.data(), c.cos.data());
        if (bits_of(got) != bits_of(want) && bad++ < 5)
          ADD_FAILURE() << "seed " << seed << " offset " << offset << " i " << i << ": got " << got
                        << ", CPU " << want;
      }
      EXPECT_EQ(bad, 0);
    }
  }
}

// Distance of r from the nearest float rounding boundary (a midpoint between
// neighbouring floats), in units of the double ulp at r.
double margin_in_double_ulps(long double r) {
  if (r == 0) return 1e30;
  const float f = float(r);
  const long double lo = (static_cast<long double>(f) + std::nextafter(f, -INFINITY)) / 2;
  const long double hi = (static_cast<long double>(f) + std::nextafter(f, INFINITY)) / 2;
  const long double d = std::min(std::fabs(r - lo), std::fabs(r - hi));
  int e = 0;
  std::frexp(r, &e);
  return double(d / std::ldexp(1.0L, e - 53));
}

TEST(PhiloxExact, RoundedDoubleFunctionsAreCorrectlyRoundedOnTheDomain) {
  // Needs a long double with more precision than double (x87's 64-bit
  // mantissa); elsewhere (e.g. aarch64's software quad) every 61st input.
  const uint32_t step = LDBL_MANT_DIG == 64 ? 1 : 61;
  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<double> worst(threads, 1e30);
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      double w = 1e30;
      for (uint32_t k = t * step; k < cuda::kUniformValues; k += threads * step) {
        const float u = philox_uniform(k << 8);
        const float ang = 6.283185307179586f * u;
        w = std::min(w, margin_in_double_ulps(std::log(static_cast<long double>(u))));
        w = std::min(w, margin_in_double_ulps(std::sin(static_cast<long double>(ang))));
        w = std::min(w, margin_in_double_ulps(std::cos(static_cast<long double>(ang))));
      }
      worst[t] = w;
    });
  }
  for (auto& th : pool) th.join();
  const double m = *std::min_element(worst.begin(), worst.end());
  // CUDA's double log is within 1 ulp and sin/cos within 2 (CUDA C++
  // Programming Guide, mathematical functions); glibc's are within 1. The
  // exact values must sit further than that (plus long double's own error)
  // from every float boundary. Measured: 9.2 ulps at the closest (cos).
  EXPECT_GT(m, 4.0);
}

}  // namespace
}  // namespace keel
