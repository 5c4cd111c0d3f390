// Dropout: the mask is the Philox stream's (element i kept iff its uniform
// exceeds p), reproducible from (seed, offset), independent of the thread
// count and of the input's strides; keep rate; backward; eval identity;
// bad p. Boxes: a shard along any dim (or a tile) draws its part of the
// whole tensor's mask, forward and backward; bad boxes; the data-parallel
// guard keeps its meaning and composes with a box.
#include "kernels/dropout.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using kernels::DropoutBox;
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

// A shard at start k * n of a (4n) tensor draws elements [k*n, (k+1)*n) of
// the whole tensor's mask, for any n (groups of four Philox words straddle
// shards).
TEST(DropoutShards, ShardsTileTheSerialMask) {
  for (int64_t n : {1, 3, 4, 7, 10, 64}) {
    SCOPED_TRACE(n);
    Tensor whole = ones({4 * n});
    Tensor serial = kernels::dropout(whole, 0.5, 99, 3);
    std::vector<double> expect = testing::to_doubles(serial);
    for (int64_t k = 0; k < 4; ++k) {
      Tensor part = kernels::dropout(ones({n}), 0.5, 99, 3, DropoutBox{{4 * n}, {k * n}});
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

// Shard k of `count` along `dim`: its box in the whole tensor `shape`.
DropoutBox shard_box(const Shape& shape, int64_t dim, int64_t k, int64_t count) {
  std::vector<int64_t> start(shape.size(), 0);
  start[size_t(dim)] = k * (shape[size_t(dim)] / count);
  return DropoutBox{shape, start};
}

// Every shard, drawn from its box, equals its slice of the whole tensor's
// result, forward (kernel), backward (kernel) and through autograd. The
// shards are narrow() views of the whole input, so they are strided when
// dim > 0. Equality is exact: each element is the same f32 product.
void expect_shards_tile(const Shape& shape, int64_t dim, int64_t count) {
  SCOPED_TRACE(shape_str(shape) + " dim " + std::to_string(dim) + " in " + std::to_string(count));
  const double p = 0.4;
  Tensor x = testing::uniform(shape, 12, 0.5, 1.5);  // nonzero: zeros mark dropped
  Tensor dy = testing::uniform(shape, 13);
  Tensor y = kernels::dropout(x, p, 17, 4), dx = kernels::dropout_backward(dy, p, 17, 4);
  Tensor xl = x.clone().set_requires_grad(true);
  Generator g;
  g.set_state(17, 4);  // the kernels' (seed, offset)
  dropout(xl, p, true, g).backward(dy);
  const int64_t n = shape[size_t(dim)] / count;
  for (int64_t k = 0; k < count; ++k) {
    SCOPED_TRACE("shard " + std::to_string(k));
    const DropoutBox box = shard_box(shape, dim, k, count);
    auto slice = [&](const Tensor& t) { return testing::to_doubles(t.narrow(dim, k * n, n)); };
    EXPECT_EQ(testing::to_doubles(kernels::dropout(x.narrow(dim, k * n, n), p, 17, 4, box)),
              slice(y));
    EXPECT_EQ(
        testing::to_doubles(kernels::dropout_backward(dy.narrow(dim, k * n, n), p, 17, 4, box)),
        slice(dx));
    Tensor part = x.narrow(dim, k * n, n).contiguous().set_requires_grad(true);
    Generator gk;
    gk.set_state(17, 4);
    Tensor yk = dropout(part, p, true, gk, box);
    EXPECT_EQ(testing::to_doubles(yk), slice(y));
    yk.backward(dy.narrow(dim, k * n, n).contiguous());
    EXPECT_EQ(testing::to_doubles(part.grad()), slice(xl.grad()));
  }
}

TEST(DropoutBox, ShardsAlongAnyDimTileTheSerialMask) {
  // (B, T, C)-like, with dims that are and are not multiples of 4 (Philox
  // groups straddle shards and rows).
  for (const Shape& shape : {Shape{4, 8, 12}, Shape{4, 6, 10}})
    for (int64_t dim : {0, 1, 2})
      for (int64_t count : {2, 4})
        if (shape[size_t(dim)] % count == 0) expect_shards_tile(shape, dim, count);
  // (B, H, T, T)-like attention probabilities sharded by heads.
  for (int64_t count : {2, 4}) expect_shards_tile({2, 4, 5, 5}, 1, count);
}

TEST(DropoutBox, LargeShardIndependentOfThreadCount) {
  // Large enough to run in parallel: a channel shard (runs of 515, cut into
  // pieces across threads) against the whole tensor's slice.
  const Shape shape{8, 64, 1030};
  Tensor x = testing::uniform(shape, 14, 0.5, 1.5);
  const Doubles whole = testing::to_doubles(kernels::dropout(x, 0.25, 3, 1).narrow(2, 515, 515));
  // A batch shard is one run of 263680 elements, cut into pieces too.
  const Doubles rows = testing::to_doubles(kernels::dropout(x, 0.25, 3, 1).narrow(0, 4, 4));
  const int saved = omp_get_max_threads();
  for (int threads : {1, 3, 8}) {
    SCOPED_TRACE(threads);
    omp_set_num_threads(threads);
    EXPECT_EQ(testing::to_doubles(
                  kernels::dropout(x.narrow(2, 515, 515), 0.25, 3, 1, shard_box(shape, 2, 1, 2))),
              whole);
    EXPECT_EQ(testing::to_doubles(
                  kernels::dropout(x.narrow(0, 4, 4), 0.25, 3, 1, shard_box(shape, 0, 1, 2))),
              rows);
  }
  omp_set_num_threads(saved);
}

TEST(DropoutBox, TileInTwoDimsAndTheWholeBox) {
  // A (T, C) tile of a (B, T, C) tensor: sequence and channel shard at once.
  const Shape shape{3, 8, 10};
  Tensor x = testing::uniform(shape, 15, 0.5, 1.5);
  Tensor y = kernels::dropout(x, 0.5, 21, 2);
  Tensor tile = x.narrow(1, 2, 4).narrow(2, 5, 5);
  EXPECT_EQ(testing::to_doubles(kernels::dropout(tile, 0.5, 21, 2, DropoutBox{shape, {0, 2, 5}})),
            testing::to_doubles(y.narrow(1, 2, 4).narrow(2, 5, 5)));
  // A box that is the whole tensor is the empty box.
  EXPECT_EQ(testing::to_doubles(kernels::dropout(x, 0.5, 21, 2, DropoutBox{shape, {0, 0, 0}})),
            testing::to_doubles(y));
}

TEST(DropoutBox, BadBoxesAreRefused) {
  Tensor x = zeros({2, 3, 4});
  EXPECT_KEEL_ERROR(kernels::dropout(x, 0.5, 1, 0, DropoutBox{{2, 6}, {0, 0}}), "dropout", "rank 3",
                    "(2, 6)", "(2, 3, 4)");
  EXPECT_KEEL_ERROR(kernels::dropout(x, 0.5, 1, 0, DropoutBox{{2, 6, 4}, {0, 0}}), "rank 3",
                    "start (0, 0)");
  EXPECT_KEEL_ERROR(kernels::dropout(x, 0.5, 1, 0, DropoutBox{{2, 6, 4}, {0, 4, 0}}), "dim 1",
                    "start 4 + size 3", "logical size 6");
  EXPECT_KEEL_ERROR(kernels::dropout(x, 0.5, 1, 0, DropoutBox{{2, 3, 4}, {0, 0, -1}}), "dim 2",
                    "start -1");
  EXPECT_KEEL_ERROR(kernels::dropout_backward(x, 0.5, 1, 0, DropoutBox{{2, 2, 4}, {0, 0, 0}}),
                    "dropout backward", "dim 1", "logical size 2");
  EXPECT_KEEL_ERROR(kernels::dropout(zeros(Shape(9, 1)), 0.5, 1, 0,
                                     DropoutBox{Shape(9, 1), std::vector<int64_t>(9, 0)}),
                    "at most 8 dims");
  // Through autograd.
  Generator g(1);
  EXPECT_KEEL_ERROR(dropout(x, 0.5, true, g, DropoutBox{{2, 3, 2}, {0, 0, 0}}), "dim 2",
                    "logical size 2");
}

// The guard keeps its meaning: element i of x is stream element
// index * numel(x) + i (checked against core/philox.h directly), forward and
// backward, for a 0-d x too; and a box composes with it (the box is x's
// place in this rank's tensor, which is rows [index * n, (index + 1) * n)).
TEST(DropoutBox, GuardIsTheBatchShardAndComposesWithABox) {
  const double p = 0.5;
  const float scale = 2.0f;
  Tensor x = leaf({2, 3, 5}, 16, 0.5, 1.5);
  Generator g(8);
  Tensor y;
  {
    DropoutShardGuard shard(1, 4);
    y = dropout(x, p, true, g);
  }
  Tensor dy = testing::uniform({2, 3, 5}, 17);
  y.backward(dy);
  Doubles xd = testing::to_doubles(x), yd = testing::to_doubles(y);
  Doubles dyd = testing::to_doubles(dy), gx = testing::to_doubles(x.grad());
  for (size_t i = 0; i < xd.size(); ++i) {
    const bool keep = philox_uniform_at(8, 0, 30 + i) > p;
    ASSERT_EQ(yd[i], keep ? double(float(xd[i]) * scale) : 0.0) << i;
    ASSERT_EQ(gx[i], keep ? double(float(dyd[i]) * scale) : 0.0) << i;
  }
  {
    DropoutShardGuard shard(2, 3);
    Generator gs(8);
    EXPECT_EQ(dropout(full({}, 3.0), p, true, gs).item(),
              philox_uniform_at(8, 0, 2) > p ? 6.0 : 0.0);
  }

  // Rank 1 of 2 holds rows [2, 4) of a (4, 3, 8) batch and, within them,
  // channels [4, 8): its box in its own (2, 3, 8) tensor is on dim 2.
  Tensor whole = testing::uniform({4, 3, 8}, 18, 0.5, 1.5);
  Generator gw(9), gr(9);
  Tensor serial = dropout(whole, p, true, gw);
  Tensor part = whole.narrow(0, 2, 2).narrow(2, 4, 4);
  Tensor got;
  {
    DropoutShardGuard shard(1, 2);
    got = dropout(part, p, true, gr, DropoutBox{{2, 3, 8}, {0, 0, 4}});
  }
  EXPECT_EQ(testing::to_doubles(got), testing::to_doubles(serial.narrow(0, 2, 2).narrow(2, 4, 4)));
}

}  // namespace
}  // namespace keel
