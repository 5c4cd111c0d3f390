// keel's CPU FFT (kernels/cpu/fft.h): complex and real transforms against a
// float64 DFT, round trips up to 2^20, linearity, and bad sizes refused.
#include "kernels/cpu/fft.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <vector>

#include "core/error.h"

namespace keel {
namespace {

namespace fft = kernels::fft;

std::vector<float> randn(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(gen);
  return v;
}

// float64 DFT with the sign s (-1 forward, +1 inverse), unnormalised.
void dft(const std::vector<float>& xr, const std::vector<float>& xi, int s, std::vector<double>& yr,
         std::vector<double>& yi) {
  const int64_t n = int64_t(xr.size());
  yr.assign(size_t(n), 0.0);
  yi.assign(size_t(n), 0.0);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < n; ++j) {
      const double a = s * 2.0 * std::numbers::pi * double((j * k) % n) / double(n);
      yr[size_t(k)] += xr[size_t(j)] * std::cos(a) - xi[size_t(j)] * std::sin(a);
      yi[size_t(k)] += xr[size_t(j)] * std::sin(a) + xi[size_t(j)] * std::cos(a);
    }
}

// f32 FFT error grows like eps * log2(n) * rms(X); 2e-6 * (1 + log2 n)
// relative to the spectrum's max magnitude leaves a margin of a few times.
double tol(int64_t n) { return 2e-6 * (1.0 + std::log2(double(n))); }

double max_abs(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::hypot(a[i], b[i]));
  return m;
}

TEST(Fft, ComplexMatchesFloat64Dft) {
  for (int64_t n : {1, 2, 4, 8, 16, 32, 64, 128, 512, 2048}) {
    for (bool inverse : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " inverse=" << inverse);
      auto xr = randn(n, 1), xi = randn(n, 2);
      std::vector<double> yr, yi;
      dft(xr, xi, inverse ? 1 : -1, yr, yi);
      auto re = xr, im = xi;
      fft::c2c(n, re.data(), im.data(), inverse);
      const double scale = max_abs(yr, yi);
      for (int64_t k = 0; k < n; ++k) {
        ASSERT_NEAR(re[size_t(k)], yr[size_t(k)], tol(n) * scale) << "k=" << k;
        ASSERT_NEAR(im[size_t(k)], yi[size_t(k)], tol(n) * scale) << "k=" << k;
      }
    }
  }
}

TEST(Fft, RealMatchesFloat64Dft) {
  for (int64_t n : {1, 2, 4, 8, 16, 32, 128, 1024, 4096}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto x = randn(n, 3);
    std::vector<float> zero(size_t(n), 0.f);
    std::vector<double> yr, yi;
    dft(x, zero, -1, yr, yi);
    std::vector<float> re(size_t(n / 2 + 1)), im(size_t(n / 2 + 1));
    fft::r2c(n, x.data(), re.data(), im.data());
    const double scale = max_abs(yr, yi);
    for (int64_t k = 0; k <= n / 2; ++k) {
      ASSERT_NEAR(re[size_t(k)], yr[size_t(k)], tol(n) * scale) << "k=" << k;
      ASSERT_NEAR(im[size_t(k)], yi[size_t(k)], tol(n) * scale) << "k=" << k;
    }
    // c2r of the float64 spectrum gives x back.
    std::vector<float> sr(size_t(n / 2 + 1)), si(size_t(n / 2 + 1)), back(static_cast<size_t>(n));
    for (int64_t k = 0; k <= n / 2; ++k) {
      sr[size_t(k)] = float(yr[size_t(k)]);
      si[size_t(k)] = float(yi[size_t(k)]);
    }
    fft::c2r(n, sr.data(), si.data(), back.data());
    for (int64_t j = 0; j < n; ++j) ASSERT_NEAR(back[size_t(j)], x[size_t(j)], tol(n) * 4) << j;
  }
}

TEST(Fft, RoundTripUpTo2To20) {
  for (int64_t n : {int64_t(1) << 12, int64_t(1) << 17, int64_t(1) << 20}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto x = randn(n, 4);
    std::vector<float> re(size_t(n / 2 + 1)), im(size_t(n / 2 + 1)), back(static_cast<size_t>(n));
    fft::r2c(n, x.data(), re.data(), im.data());
    fft::c2r(n, re.data(), im.data(), back.data());
    double err = 0;
    for (int64_t j = 0; j < n; ++j)
      err = std::max(err, double(std::abs(back[size_t(j)] - x[size_t(j)])));
    // x is unit normal (max ~5); round-trip error ~ eps * log2 n * |x|.
    EXPECT_LT(err, 5.0 * tol(n)) << "n=" << n;

    auto cr = randn(n, 5), ci = randn(n, 6);
    auto r = cr, i = ci;
    fft::c2c(n, r.data(), i.data(), false);
    fft::c2c(n, r.data(), i.data(), true);
    err = 0;
    for (int64_t j = 0; j < n; ++j)
      err = std::max(err, double(std::abs(r[size_t(j)] / float(n) - cr[size_t(j)])) +
                              double(std::abs(i[size_t(j)] / float(n) - ci[size_t(j)])));
    EXPECT_LT(err, 5.0 * tol(n)) << "n=" << n;
  }
}

TEST(Fft, Linearity) {
  const int64_t n = 1024;
  auto a = randn(n, 7), b = randn(n, 8);
  const float alpha = 0.75f, beta = -1.5f;
  std::vector<float> c(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) c[size_t(j)] = alpha * a[size_t(j)] + beta * b[size_t(j)];
  const size_t h = size_t(n / 2 + 1);
  std::vector<float> ar(h), ai(h), br(h), bi(h), cr(h), ci(h);
  fft::r2c(n, a.data(), ar.data(), ai.data());
  fft::r2c(n, b.data(), br.data(), bi.data());
  fft::r2c(n, c.data(), cr.data(), ci.data());
  double scale = 0;
  for (size_t k = 0; k < h; ++k) scale = std::max(scale, double(std::hypot(cr[k], ci[k])));
  for (size_t k = 0; k < h; ++k) {
    ASSERT_NEAR(cr[k], alpha * ar[k] + beta * br[k], tol(n) * scale) << k;
    ASSERT_NEAR(ci[k], alpha * ai[k] + beta * bi[k], tol(n) * scale) << k;
  }
}

TEST(Fft, RefusesNonPowerOfTwo) {
  std::vector<float> x(12), re(12), im(12);
  try {
    fft::c2c(12, re.data(), im.data(), false);
    FAIL() << "size 12 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("power of two"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fft::r2c(0, x.data(), re.data(), im.data()), Error);
  EXPECT_THROW(fft::c2r(6, re.data(), im.data(), x.data()), Error);
}

}  // namespace
}  // namespace keel
