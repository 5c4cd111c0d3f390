// Dropout: the mask is the Philox stream's (element i kept iff its uniform
// exceeds p), reproducible from (seed, offset), independent of the thread
// count and of the input's strides; keep rate; backward; eval identity;
// bad p.
#include "kernels/dropout.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;

// The specified mask, computed element by element from core/philox.h.
std::vector<bool> expected_mask(int64_t n, double p, uint64_t seed, uint64_t offset) {
  std::vector<bool> keep(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    keep[size_t(i)] = philox_uniform_at(seed, offset, uint64_t(i)) > p;
  return keep;
}

TEST(Dropout, MaskIsThePhiloxStreamAndKeptValuesAreScaled) {
  const double p = 0.3;
  Tensor x = testing::uniform({7, 33}, 1, 0.5, 1.5);  // nonzero, so zeros mark dropped
  Tensor y = kernels::dropout(x, p, 42, 5);
  Doubles xd = testing::to_doubles(x), yd = testing::to_doubles(y);
  std::vector<bool> keep = expected_mask(x.numel(), p, 42, 5);
  const float scale = float(1.0 / (1.0 - p));
  for (size_t i = 0; i < yd.size(); ++i)
    ASSERT_EQ(yd[i], keep[i] ? double(float(xd[i]) * scale) : 0.0) << "element " << i;
}

TEST(Dropout, SameSeedAndOffsetGiveTheSameMask) {
  Tensor x = testing::uniform({1000}, 2, 0.5, 1.5);
  Doubles a = testing::to_doubles(kernels::dropout(x, 0.5, 7, 3));
  Doubles b = testing::to_doubles(kernels::dropout(x, 0.5, 7, 3));
  Doubles c = testing::to_doubles(kernels::dropout(x, 0.5, 7, 4));
  Doubles d = testing::to_doubles(kernels::dropout(x, 0.5, 8, 3));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, d);

  // Through a generator: each call draws the next offset; resetting the
  // state replays the masks.
  Generator g(9);
  Doubles g1 = testing::to_doubles(dropout(x, 0.5, true, g));
  Doubles g2 = testing::to_doubles(dropout(x, 0.5, true, g));
  EXPECT_EQ(g.offset(), 2u);
  EXPECT_NE(g1, g2);
  g.set_state(9, 0);
  EXPECT_EQ(testing::to_doubles(dropout(x, 0.5, true, g)), g1);
  EXPECT_EQ(g1, testing::to_doubles(kernels::dropout(x, 0.5, 9, 0)));

  // The default generator follows manual_seed.
  manual_seed(123);
  Doubles m1 = testing::to_doubles(dropout(x, 0.5, true));
  manual_seed(123);
  EXPECT_EQ(testing::to_doubles(dropout(x, 0.5, true)), m1);
}

TEST(Dropout, MaskIndependentOfThreadCount) {
  // Large enough to run in parallel, and not a multiple of 4 (Philox lanes).
  Tensor x = testing::uniform({1 << 18 | 3}, 3, 0.5, 1.5);
  const int saved = omp_get_max_threads();
  Doubles runs[3];
  const int threads[3] = {1, 3, 8};
  for (int r = 0; r < 3; ++r) {
    omp_set_num_threads(threads[r]);
    runs[r] = testing::to_doubles(kernels::dropout(x, 0.25, 11, 2));
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_EQ(runs[0], runs[2]);
}

TEST(Dropout, KeepRateNearOneMinusP) {
  const int64_t n = 1 << 20;
  Tensor x = ones({n});
  for (double p : {0.1, 0.5, 0.9}) {
    Doubles y = testing::to_doubles(kernels::dropout(x, p, 5, 1));
    int64_t kept = 0;
    for (double v : y) kept += v != 0.0;
    // Binomial: std of the rate is sqrt(p(1-p)/n) <= 4.9e-4; allow 6 std.
    const double tol = 6 * std::sqrt(p * (1 - p) / double(n));
    EXPECT_NEAR(double(kept) / double(n), 1.0 - p, tol) << "p=" << p;
  }
}

TEST(Dropout, BackwardIsMaskTimesScaleTimesGrad) {
  const double p = 0.4;
  Tensor x = leaf({5, 40}, 4);
  Generator g(21);
  Tensor y = dropout(x, p, true, g);
  Tensor dy = testing::uniform({5, 40}, 5);
  y.backward(dy);
  Doubles gx = testing::to_doubles(x.grad()), dyd = testing::to_doubles(dy);
  std::vector<bool> keep = expected_mask(x.numel(), p, 21, 0);
  const float scale = float(1.0 / (1.0 - p));
  for (size_t i = 0; i < gx.size(); ++i)
    ASSERT_EQ(gx[i], keep[i] ? double(float(dyd[i]) * scale) : 0.0) << "element " << i;

  // And against float64 finite differences of the masked reference.
  Tensor x2 = leaf({3, 17}, 6);
  check_op(
      [&](const std::vector<Tensor>& in) {
        Generator gen(31);
        return dropout(in[0], p, true, gen);
      },
      [&](const std::vector<Doubles>& in) {
        std::vector<bool> k = expected_mask(int64_t(in[0].size()), p, 31, 0);
        Doubles out(in[0].size());
        for (size_t i = 0; i < out.size(); ++i) out[i] = k[i] ? in[0][i] / (1 - p) : 0.0;
        return out;
      },
      {x2});
}

TEST(Dropout, StridedAndHalfInputsUseTheRowMajorIndex) {
  Tensor base = testing::uniform({6, 10}, 7, 0.5, 1.5);
  Tensor xt = base.transpose(0, 1);  // (10, 6), not contiguous
  EXPECT_EQ(testing::to_doubles(kernels::dropout(xt, 0.5, 3, 9)),
            testing::to_doubles(kernels::dropout(xt.contiguous(), 0.5, 3, 9)));
  Tensor xh = base.to(DType::BF16);
  Tensor yh = kernels::dropout(xh, 0.5, 3, 9);
  EXPECT_EQ(yh.dtype(), DType::BF16);
  std::vector<bool> keep = expected_mask(xh.numel(), 0.5, 3, 9);
  Doubles xd = testing::to_doubles(xh), yd = testing::to_doubles(yh);
  // Kept values are exactly 2x the bf16 input (a power of two: no rounding).
  for (size_t i = 0; i < yd.size(); ++i) ASSERT_EQ(yd[i], keep[i] ? 2 * xd[i] : 0.0);
}

TEST(Dropout, EvalModeAndZeroPAreIdentityWithoutADraw) {
  Tensor x = leaf({4, 4}, 8);
  Generator g(1);
  EXPECT_TRUE(dropout(x, 0.5, false, g).same(x));
  EXPECT_TRUE(dropout(x, 0.0, true, g).same(x));
  EXPECT_EQ(g.offset(), 0u);
}

TEST(Dropout, NonFiniteInputsPropagate) {
  // A dropped element is x * 0: NaN and inf become NaN, as in PyTorch.
  Tensor x = full({64}, std::numeric_limits<double>::quiet_NaN());
  Doubles y = testing::to_doubles(kernels::dropout(x, 0.5, 1, 1));
  for (double v : y) EXPECT_TRUE(std::isnan(v));
}

TEST(Dropout, BadPAndDtypeAreErrors) {
  Tensor x = zeros({2, 3});
  Generator g(1);
  EXPECT_KEEL_ERROR(dropout(x, 1.0, true, g), "dropout", "[0, 1)", "1", "(2, 3)");
  EXPECT_KEEL_ERROR(dropout(x, -0.1, true, g), "dropout", "[0, 1)", "-0.1");
  EXPECT_KEEL_ERROR(dropout(x, 1.5, false, g), "dropout", "[0, 1)");
  EXPECT_KEEL_ERROR(dropout(x, std::nan(""), true, g), "dropout", "[0, 1)");
  EXPECT_KEEL_ERROR(kernels::dropout(x, 1.0, 0, 0), "dropout", "[0, 1)");
  EXPECT_KEEL_ERROR(kernels::dropout(zeros({2}, DType::I64), 0.5, 0, 0), "dropout", "i64");
  EXPECT_EQ(g.offset(), 0u);
}

// A shard with base = k * n draws elements [k*n, (k+1)*n) of the whole
// tensor's mask, for any n (groups of four Philox words straddle shards).
TEST(DropoutShards, ShardsTileTheSerialMask) {
  for (int64_t n : {1, 3, 4, 7, 10, 64}) {
    SCOPED_TRACE(n);
    Tensor whole = ones({4 * n});
    Tensor serial = kernels::dropout(whole, 0.5, 99, 3);
    std::vector<double> expect = testing::to_doubles(serial);
    for (int64_t k = 0; k < 4; ++k) {
      Tensor part = kernels::dropout(ones({n}), 0.5, 99, 3, uint64_t(k * n));
      std::vector<double> got = testing::to_doubles(part);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[size_t(i)], expect[size_t(k * n + i)]) << k;
    }
  }
  // Through autograd: the guard sets the base from the shard index.
  Generator g1(5), g2(5);
  Tensor full = dropout(ones({2, 6}), 0.5, true, g1);
  Tensor second;
  {
    DropoutShardGuard shard(1, 2);
    second = dropout(ones({1, 6}), 0.5, true, g2);
  }
  std::vector<double> f = testing::to_doubles(full), s2 = testing::to_doubles(second);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(s2[size_t(i)], f[size_t(6 + i)]);
  EXPECT_KEEL_ERROR(DropoutShardGuard(2, 2), "shard 2 of 2");
}

}  // namespace
}  // namespace keel
