// Fused cross-entropy: forward against a float64 reference and the logits
// gradient against its finite differences, with ignore_index rows, label
// smoothing, i32 and i64 targets, (..., V) logits, strided logits, large
// logits, all rows ignored, thread-count independence, bf16 logits, and
// bad-input errors (shapes, dtypes, out-of-range targets).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "kernels/cross_entropy.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;
using testing::Tolerance;

constexpr int64_t kIgnore = -100;

// Mean over non-ignored rows of the label-smoothed loss; 0 if none is valid.
Doubles cross_entropy_ref(const Doubles& x, const Doubles& t, size_t V, int64_t ignore,
                          double eps) {
  double total = 0;
  int64_t valid = 0;
  for (size_t r = 0; r < t.size(); ++r) {
    if (int64_t(t[r]) == ignore) continue;
    const double* xr = x.data() + r * V;
    double m = -INFINITY;
    for (size_t v = 0; v < V; ++v) m = std::max(m, xr[v]);
    double se = 0;
    for (size_t v = 0; v < V; ++v) se += std::exp(xr[v] - m);
    const double lse = m + std::log(se);
    double mean_nll = 0;
    for (size_t v = 0; v < V; ++v) mean_nll += (lse - xr[v]) / double(V);
    // eps == 0 drops the smoothing term entirely (0 * inf would be NaN for a -inf logit).
    total += (1 - eps) * (lse - xr[size_t(t[r])]) + (eps > 0 ? eps * mean_nll : 0.0);
    ++valid;
  }
  return {valid > 0 ? total / double(valid) : 0.0};
}

template <typename I>
Tensor targets_of(const std::vector<I>& v, const Shape& s) {
  return from_vector<I>(v, s);
}

TEST(CrossEntropy, ForwardAndBackwardWithIgnoreAndSmoothing) {
  struct Case {
    Shape logits;
    bool i32;
    std::vector<int64_t> targets;
    int64_t ignore;
  };
  const Case cases[] = {
      {{4, 7}, false, {3, 0, 6, 2}, kIgnore},
      {{4, 7}, true, {3, kIgnore, 6, kIgnore}, kIgnore},
      {{2, 3, 5}, true, {0, 4, 2, kIgnore, 1, 3}, kIgnore},
      {{2, 3, 5}, false, {0, 4, 2, 2, 1, 3}, 2},  // ignore_index may name a real class
      {{1, 40}, false, {39}, kIgnore},
      {{7}, true, {5}, kIgnore},  // one row: logits (V), targets ()
  };
  for (const Case& c : cases) {
    for (double eps : {0.0, 0.1}) {
      SCOPED_TRACE(shape_str(c.logits) + (c.i32 ? " i32" : " i64") + " ignore " +
                   std::to_string(c.ignore) + " eps " + std::to_string(eps));
      const int64_t V = c.logits.back();
      const Shape ts(c.logits.begin(), c.logits.end() - 1);
      Tensor t = c.i32 ? targets_of(std::vector<int32_t>(c.targets.begin(), c.targets.end()), ts)
                       : targets_of(c.targets, ts);
      Tensor x = leaf(c.logits, 81, -3, 3);
      auto ref = [&](const std::vector<Doubles>& in) {
        return cross_entropy_ref(in[0], in[1], size_t(V), c.ignore, eps);
      };
      Tensor loss = check_op(
          [&](const std::vector<Tensor>& in) {
            return cross_entropy(in[0], in[1], c.ignore, eps);
          },
          ref, {x, t});
      EXPECT_EQ(loss.dim(), 0);
      EXPECT_EQ(loss.dtype(), DType::F32);
    }
  }
}

TEST(CrossEntropy, IgnoredRowsGetZeroGradient) {
  Tensor x = leaf({3, 6}, 82);
  Tensor t = from_vector<int64_t>({1, kIgnore, 4}, {3});
  cross_entropy(x, t, kIgnore, 0.2).backward();
  Doubles g = testing::to_doubles(x.grad());
  for (size_t v = 0; v < 6; ++v) EXPECT_EQ(g[6 + v], 0.0);
  // Each valid row's gradient sums to zero: softmax and the smoothed one-hot both sum to 1.
  for (size_t r : {0, 2}) {
    double s = 0;
    for (size_t v = 0; v < 6; ++v) s += g[r * 6 + v];
    EXPECT_NEAR(s, 0.0, 1e-7);
  }
}

TEST(CrossEntropy, NonContiguousLogits) {
  Tensor base = testing::uniform({9, 4}, 83, -2, 2);
  Tensor x = base.transpose(0, 1);  // (4, 9), strides (1, 4)
  x.set_requires_grad(true);
  ASSERT_FALSE(x.is_contiguous());
  Tensor t = from_vector<int32_t>({8, 0, kIgnore, 5}, {4});
  auto ref = [](const std::vector<Doubles>& in) {
    return cross_entropy_ref(in[0], in[1], 9, kIgnore, 0.05);
  };
  check_op([](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], kIgnore, 0.05); },
           ref, {x, t});
}

TEST(CrossEntropy, LargeLogitsStayFinite) {
  // exp(5000) overflows f32 (and f64): only the max-shifted log-sum-exp is finite.
  Tensor x = testing::uniform({3, 11}, 84, 4990, 5010);
  x.set_requires_grad(true);
  Tensor t = from_vector<int64_t>({2, 10, 0}, {3});
  auto ref = [](const std::vector<Doubles>& in) {
    return cross_entropy_ref(in[0], in[1], 11, kIgnore, 0.1);
  };
  Tolerance tol;
  // The loss is formed from x - max, which is exact in f32. The saved lse near 5000 is an f32
  // with spacing 5e-4, so the backward's softmax is off by up to ~5e-4: 1e-3 on the gradient.
  tol.fwd_atol = 1e-5;
  tol.bwd_atol = 1e-3;
  check_op([](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], kIgnore, 0.1); },
           ref, {x, t}, tol);
}

TEST(CrossEntropy, MaskedClassesAtMinusInfinity) {
  // A vocab mask sets logits to -inf: they get probability 0 and gradient 0, and without
  // label smoothing the loss stays finite. (Finite differences cannot step from -inf, so
  // this checks values directly.)
  const float inf = INFINITY;
  Tensor x = from_vector<float>({0.5f, -inf, 1.0f, -0.25f, -inf, 2.0f, 0.0f, -inf}, {2, 4});
  x.set_requires_grad(true);
  Tensor t = from_vector<int64_t>({2, 1}, {2});
  Tensor loss = cross_entropy(x, t);
  Doubles xd = testing::to_doubles(x);
  double expected = cross_entropy_ref(xd, {2, 1}, 4, kIgnore, 0.0)[0];
  EXPECT_NEAR(loss.item(), expected, 1e-6);
  loss.backward();
  Doubles g = testing::to_doubles(x.grad());
  for (size_t i : {1, 4, 7}) EXPECT_EQ(g[i], 0.0) << "masked class " << i;
  for (double v : g) EXPECT_TRUE(std::isfinite(v));
  // With smoothing, part of the target mass sits on the masked class: the loss is +inf.
  EXPECT_EQ(cross_entropy(x.detach(), t, kIgnore, 0.1).item(), inf);
}

TEST(CrossEntropy, AllRowsIgnoredGivesZeroLossAndZeroGradient) {
  Tensor x = leaf({2, 5}, 85);
  Tensor t = from_vector<int32_t>({kIgnore, kIgnore}, {2});
  Tensor loss = cross_entropy(x, t);
  EXPECT_EQ(loss.item(), 0.0);
  loss.backward();
  for (double g : testing::to_doubles(x.grad())) EXPECT_EQ(g, 0.0);
}

TEST(CrossEntropy, ParallelRowsIndependentOfThreadCount) {
  // 512 * 100 elements: above the parallel grain.
  Tensor x = testing::uniform({512, 100}, 86, -5, 5);
  std::vector<int64_t> tv(512);
  for (size_t r = 0; r < tv.size(); ++r) tv[r] = r % 7 == 3 ? kIgnore : int64_t((r * 37) % 100);
  Tensor t = from_vector<int64_t>(tv, {512});
  const int saved = omp_get_max_threads();
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    kernels::CrossEntropyOut f = kernels::cross_entropy(x, t, kIgnore, 0.1);
    Tensor g = kernels::cross_entropy_backward(full({}, 1.0), x, t, f.lse, f.n_valid, kIgnore,
                                               0.1);
    omp_set_num_threads(saved);
    return std::vector<Doubles>{testing::to_doubles(f.loss), testing::to_doubles(f.lse),
                                testing::to_doubles(g)};
  };
  std::vector<Doubles> one = run(1), three = run(3);
  for (size_t k = 0; k < one.size(); ++k) EXPECT_EQ(one[k], three[k]) << "output " << k;
  Doubles td(tv.begin(), tv.end());
  // f32 row math, f64 sum over rows: 1e-6 relative.
  EXPECT_TRUE(testing::all_close(one[0],
                                 cross_entropy_ref(testing::to_doubles(x), td, 100, kIgnore, 0.1),
                                 1e-6, 1e-6));
}

TEST(CrossEntropy, Bf16LogitsComputeInF32) {
  Tensor x = testing::uniform({6, 20}, 87, -3, 3, DType::BF16);
  x.set_requires_grad(true);
  Tensor t = from_vector<int32_t>({19, 0, kIgnore, 7, 7, 12}, {6});
  auto ref = [](const std::vector<Doubles>& in) {
    return cross_entropy_ref(in[0], in[1], 20, kIgnore, 0.1);
  };
  Tolerance tol;
  // The loss is f32 computed from exact bf16 values: f32 tolerance holds.
  // dlogits is stored in bf16: one rounding, 2^-8 relative, on values up to ~0.2.
  tol.bwd_rtol = 5e-3;
  tol.bwd_atol = 1e-4;
  Tensor loss = check_op(
      [](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], kIgnore, 0.1); },
      ref, {x, t}, tol);
  EXPECT_EQ(loss.dtype(), DType::F32);
  EXPECT_EQ(x.grad().dtype(), DType::BF16);
}

TEST(CrossEntropy, BadInputsNameRowsShapesAndDtypes) {
  Tensor x = zeros({3, 5});
  EXPECT_KEEL_ERROR(cross_entropy(x, from_vector<int64_t>({0, 7, 1}, {3})), "cross_entropy",
                    "target 7", "row 1", "V = 5");
  EXPECT_KEEL_ERROR(cross_entropy(x, from_vector<int32_t>({0, 1, -3}, {3})), "target -3",
                    "row 2", "V = 5");
  // -100 is only skipped while it is the ignore_index.
  EXPECT_KEEL_ERROR(cross_entropy(x, from_vector<int64_t>({kIgnore, 1, 2}, {3}), 0),
                    "target -100", "row 0");
  EXPECT_KEEL_ERROR(cross_entropy(x, zeros({3})), "targets", "i32 or i64", "f32 (3,)",
                    "f32 (3, 5)");
  EXPECT_KEEL_ERROR(cross_entropy(x, from_vector<int64_t>({0, 1, 2, 3}, {4})), "(3,)",
                    "f32 (3, 5)", "i64 (4,)");
  EXPECT_KEEL_ERROR(cross_entropy(zeros({3, 5}, DType::I64), from_vector<int64_t>({0, 1, 2}, {3})),
                    "logits", "i64 (3, 5)");
  EXPECT_KEEL_ERROR(cross_entropy(x, from_vector<int64_t>({0, 1, 2}, {3}), kIgnore, 1.5),
                    "label_smoothing", "1.5");
  EXPECT_KEEL_ERROR(cross_entropy(zeros({3, 0}), from_vector<int64_t>({0, 1, 2}, {3})), "V",
                    "(3, 0)");
}

}  // namespace
}  // namespace keel
