// Softmax and log-softmax: forward against a float64 reference and backward
// against its finite differences along every dim, strided inputs, large
// logits, the parallel paths, bf16 storage, and bad-input errors.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "kernels/softmax.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;
using testing::Tolerance;

// Row-major softmax (or log-softmax) of x with shape `s` along `dim`.
Doubles softmax_ref(const Doubles& x, const Shape& s, int64_t dim, bool log) {
  const int64_t nd = int64_t(s.size());
  const int64_t d = dim < 0 ? dim + nd : dim;
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= s[size_t(k)];
  for (int64_t k = d + 1; k < nd; ++k) inner *= s[size_t(k)];
  const int64_t n = s[size_t(d)];
  Doubles y(x.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t j) { return size_t((o * n + j) * inner + i); };
      double m = -INFINITY;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, x[at(j)]);
      double sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += std::exp(x[at(j)] - m);
      for (int64_t j = 0; j < n; ++j)
        y[at(j)] = log ? x[at(j)] - m - std::log(sum) : std::exp(x[at(j)] - m) / sum;
    }
  return y;
}

Tensor run(bool log, const Tensor& x, int64_t dim) {
  return log ? log_softmax(x, dim) : softmax(x, dim);
}

TEST(Softmax, ForwardAndBackwardAlongEveryDim) {
  const Shape shapes[] = {{5}, {3, 7}, {2, 3, 4}, {4, 1, 6}, {3, 70}};
  for (const Shape& s : shapes) {
    for (int64_t dim = -int64_t(s.size()); dim < int64_t(s.size()); ++dim) {
      for (bool log : {false, true}) {
        SCOPED_TRACE(shape_str(s) + " dim " + std::to_string(dim) + (log ? " log" : ""));
        Tensor x = leaf(s, 17, -3, 3);
        auto ref = [&](const std::vector<Doubles>& in) { return softmax_ref(in[0], s, dim, log); };
        check_op([&](const std::vector<Tensor>& in) { return run(log, in[0], dim); }, ref, {x});
      }
    }
  }
}

TEST(Softmax, NonContiguousInputOnDimZeroAndLast) {
  for (int64_t dim : {0, -1}) {
    for (bool log : {false, true}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + (log ? " log" : ""));
      Tensor base = testing::uniform({6, 4, 3}, 5, -2, 2);
      Tensor x = base.permute({2, 0, 1});  // (3, 6, 4), strides (1, 12, 3)
      x.set_requires_grad(true);
      ASSERT_FALSE(x.is_contiguous());
      auto ref = [&](const std::vector<Doubles>& in) {
        return softmax_ref(in[0], {3, 6, 4}, dim, log);
      };
      check_op([&](const std::vector<Tensor>& in) { return run(log, in[0], dim); }, ref, {x});
      EXPECT_EQ(x.grad().sizes(), (Shape{3, 6, 4}));
    }
  }
}

TEST(Softmax, LargeLogitsStayFinite) {
  // exp(1000) overflows f32: only the max-shifted form gives finite values.
  Tensor x = testing::uniform({4, 9}, 3, 990, 1010);
  for (bool log : {false, true}) {
    for (int64_t dim : {0, 1}) {
      auto ref = [&](const std::vector<Doubles>& in) {
        return softmax_ref(in[0], {4, 9}, dim, log);
      };
      // log-softmax values reach ~-20; x - max is exact, so f32 keeps ~1e-6 of them.
      Tolerance tol;
      tol.fwd_atol = 1e-5;
      check_op([&](const std::vector<Tensor>& in) { return run(log, in[0], dim); }, ref, {x},
               tol);
    }
  }
}

TEST(Softmax, MaskedEntriesAtMinusInfinity) {
  // Attention masks put -inf in a row: those entries get probability 0 (log: -inf) and
  // gradient 0. Finite differences cannot step from -inf, so values are checked directly.
  const float inf = INFINITY;
  Tensor x = from_vector<float>({0.0f, -inf, 1.0f}, {3});
  x.set_requires_grad(true);
  const double e = std::exp(1.0);
  Doubles y = testing::to_doubles(softmax(x, 0));
  EXPECT_NEAR(y[0], 1 / (1 + e), 1e-7);
  EXPECT_EQ(y[1], 0.0);
  EXPECT_NEAR(y[2], e / (1 + e), 1e-7);
  Doubles ly = testing::to_doubles(log_softmax(x.detach(), 0));
  EXPECT_EQ(ly[1], -inf);
  EXPECT_NEAR(ly[2], -std::log1p(1 / e), 1e-6);
  sum(mul(softmax(x, 0), from_vector<float>({1.0f, 2.0f, 3.0f}, {3}))).backward();
  Doubles g = testing::to_doubles(x.grad());
  EXPECT_EQ(g[1], 0.0);
  for (double v : g) EXPECT_TRUE(std::isfinite(v));
}

TEST(Softmax, ZeroDimInputIsOne) {
  Tensor x = full({}, 3.5);
  EXPECT_EQ(softmax(x, 0).item(), 1.0);
  EXPECT_EQ(log_softmax(x, -1).item(), 0.0);
}

TEST(Softmax, ParallelPathsMatchReferenceAndThreadCount) {
  // 64 * 1000 elements: above the parallel grain on both the row and column paths.
  const Shape s{64, 1000};
  Tensor x = testing::uniform(s, 9, -4, 4);
  Tensor dy = testing::uniform(s, 10);
  Doubles xd = testing::to_doubles(x);
  const int saved = omp_get_max_threads();
  for (int64_t dim : {0, 1}) {
    for (bool log : {false, true}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + (log ? " log" : ""));
      omp_set_num_threads(1);
      Tensor y1 = log ? kernels::log_softmax(x, dim) : kernels::softmax(x, dim);
      Tensor g1 = log ? kernels::log_softmax_backward(y1, dy, dim)
                      : kernels::softmax_backward(y1, dy, dim);
      omp_set_num_threads(3);
      Tensor y3 = log ? kernels::log_softmax(x, dim) : kernels::softmax(x, dim);
      Tensor g3 = log ? kernels::log_softmax_backward(y3, dy, dim)
                      : kernels::softmax_backward(y3, dy, dim);
      omp_set_num_threads(saved);
      // Each row is reduced by one thread, so any thread count gives the same bits.
      EXPECT_EQ(testing::to_doubles(y1), testing::to_doubles(y3));
      EXPECT_EQ(testing::to_doubles(g1), testing::to_doubles(g3));
      // f32 sums over 1000 terms: 1e-5 relative.
      EXPECT_TRUE(testing::all_close(testing::to_doubles(y3), softmax_ref(xd, s, dim, log), 1e-5,
                                     1e-7));
    }
  }
}

TEST(Softmax, Bf16StorageComputesInF32) {
  for (int64_t dim : {0, -1}) {
    for (bool log : {false, true}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + (log ? " log" : ""));
      Tensor x = testing::uniform({5, 33}, 4, -3, 3, DType::BF16);
      x.set_requires_grad(true);
      auto ref = [&](const std::vector<Doubles>& in) {
        return softmax_ref(in[0], {5, 33}, dim, log);
      };
      Tolerance tol;
      // bf16 output: f32 math, then one rounding to 8 significant bits (2^-8 relative).
      tol.fwd_rtol = 4e-3;
      tol.fwd_atol = 1e-6;
      // bf16 gradients: dy, y and dx are each rounded to bf16 (2^-8 relative) and
      // dy - sum(...) cancels, so the error is a few 2^-8 of the larger terms. log_softmax
      // is looser: its backward takes exp(y) of a bf16 y near -3.5, whose absolute
      // error (~8e-3) becomes a relative error of exp(y) * sum(dy) ~ 1.
      tol.bwd_rtol = 3e-2;
      tol.bwd_atol = log ? 1.5e-2 : 2e-3;
      Tensor y = check_op([&](const std::vector<Tensor>& in) { return run(log, in[0], dim); },
                          ref, {x}, tol);
      EXPECT_EQ(y.dtype(), DType::BF16);
      EXPECT_EQ(x.grad().dtype(), DType::BF16);
    }
  }
}

TEST(Softmax, BadInputsNameShapesAndDtypes) {
  EXPECT_KEEL_ERROR(softmax(zeros({2, 3}, DType::I64), 0), "softmax", "i64", "(2, 3)");
  EXPECT_KEEL_ERROR(log_softmax(zeros({2, 3}), 2), "log_softmax", "dim 2", "f32 (2, 3)");
  EXPECT_KEEL_ERROR(softmax(zeros({2, 3}), -3), "dim -3", "(2, 3)");
  EXPECT_KEEL_ERROR(kernels::softmax_backward(zeros({2, 3}), zeros({3, 2}), -1),
                    "softmax backward", "(2, 3)", "(3, 2)");
  EXPECT_KEEL_ERROR(kernels::log_softmax_backward(zeros({2, 3}), zeros({2, 3}, DType::BF16), 0),
                    "log_softmax backward", "f32", "bf16");
}

}  // namespace
}  // namespace keel
