// Fused RMSNorm: forward against a float64 reference and gradients for x
// and weight against its finite differences, strided input, thread-count
// independence of the weight gradient, bf16 storage, and bad-input errors.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "kernels/rmsnorm.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;
using testing::Tolerance;

// Row-major rmsnorm of x (R, C).
Doubles rmsnorm_ref(const Doubles& x, const Doubles& w, size_t C, double eps) {
  Doubles y(x.size());
  for (size_t r = 0; r < x.size() / C; ++r) {
    const double* xr = x.data() + r * C;
    double ms = 0;
    for (size_t i = 0; i < C; ++i) ms += xr[i] * xr[i];
    const double rstd = 1 / std::sqrt(ms / double(C) + eps);
    for (size_t i = 0; i < C; ++i) y[r * C + i] = xr[i] * rstd * w[i];
  }
  return y;
}

TEST(RmsNorm, ForwardAndBackward) {
  const Shape shapes[] = {{8}, {3, 8}, {2, 3, 16}, {2, 100}};
  for (const Shape& s : shapes) {
    SCOPED_TRACE(shape_str(s));
    const int64_t C = s.back();
    Tensor x = leaf(s, 71, -2, 2);
    Tensor w = leaf({C}, 72, 0.5, 1.5);
    auto ref = [&](const std::vector<Doubles>& in) {
      return rmsnorm_ref(in[0], in[1], size_t(C), 1e-6);
    };
    check_op([](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1], 1e-6); }, ref,
             {x, w});
  }
}

TEST(RmsNorm, NonContiguousInput) {
  Tensor base = testing::uniform({2, 12, 3}, 73, -2, 2);
  Tensor x = base.permute({0, 2, 1});  // (2, 3, 12), strides (36, 1, 3)
  x.set_requires_grad(true);
  ASSERT_FALSE(x.is_contiguous());
  Tensor w = leaf({12}, 74, 0.5, 1.5);
  auto ref = [](const std::vector<Doubles>& in) { return rmsnorm_ref(in[0], in[1], 12, 1e-6); };
  check_op([](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1]); }, ref, {x, w});
}

TEST(RmsNorm, WeightGradientIndependentOfThreadCount) {
  // 1000 * 64 elements: parallel over 125 row blocks.
  const Shape s{1000, 64};
  Tensor x = testing::uniform(s, 75, -2, 2);
  Tensor dy = testing::uniform(s, 76);
  Tensor w = testing::uniform({64}, 77, 0.5, 1.5);
  const int saved = omp_get_max_threads();
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    kernels::RmsNormOut f = kernels::rmsnorm(x, w, 1e-6);
    kernels::RmsNormGrads g = kernels::rmsnorm_backward(dy, x, w, f.rstd, true, true);
    omp_set_num_threads(saved);
    return std::vector<Doubles>{testing::to_doubles(f.y), testing::to_doubles(g.dx),
                                testing::to_doubles(g.dweight)};
  };
  std::vector<Doubles> one = run(1), three = run(3);
  for (size_t k = 0; k < one.size(); ++k) EXPECT_EQ(one[k], three[k]) << "output " << k;
  Doubles xd = testing::to_doubles(x), gd = testing::to_doubles(dy);
  Doubles dw(64, 0.0);
  for (size_t r = 0; r < 1000; ++r) {
    const double* xr = xd.data() + r * 64;
    double ms = 0;
    for (size_t i = 0; i < 64; ++i) ms += xr[i] * xr[i];
    const double rstd = 1 / std::sqrt(ms / 64 + 1e-6);
    for (size_t i = 0; i < 64; ++i) dw[i] += gd[r * 64 + i] * xr[i] * rstd;
  }
  // f32 partial sums over 8-row blocks: 1e-5 relative plus cancellation headroom.
  EXPECT_TRUE(testing::all_close(one[2], dw, 1e-5, 1e-5));
}

TEST(RmsNorm, Bf16StorageComputesInF32) {
  Tensor x = testing::uniform({4, 32}, 78, -2, 2, DType::BF16);
  x.set_requires_grad(true);
  Tensor w = testing::uniform({32}, 79, 0.5, 1.5, DType::BF16);
  w.set_requires_grad(true);
  auto ref = [](const std::vector<Doubles>& in) { return rmsnorm_ref(in[0], in[1], 32, 1e-6); };
  Tolerance tol;
  // bf16 output: f32 math, then one rounding to 8 significant bits (2^-8 relative).
  tol.fwd_rtol = 4e-3;
  tol.fwd_atol = 1e-5;
  // bf16 gradients: dy and dx are rounded to bf16 and dx cancels across the row.
  tol.bwd_rtol = 3e-2;
  tol.bwd_atol = 2e-2;
  Tensor y = check_op([](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1]); }, ref,
                      {x, w}, tol);
  EXPECT_EQ(y.dtype(), DType::BF16);
  EXPECT_EQ(x.grad().dtype(), DType::BF16);
  EXPECT_EQ(w.grad().dtype(), DType::BF16);
}

TEST(RmsNorm, BadInputsNameShapes) {
  EXPECT_KEEL_ERROR(rmsnorm(zeros({2, 4}), ones({3})), "rmsnorm", "weight", "(4,)",
                    "f32 (2, 4)", "f32 (3,)");
  EXPECT_KEEL_ERROR(rmsnorm(zeros({2, 4}), ones({1, 4})), "weight", "(1, 4)");
  EXPECT_KEEL_ERROR(rmsnorm(zeros({2, 4}, DType::I64), ones({4})), "rmsnorm", "i64 (2, 4)");
  EXPECT_KEEL_ERROR(rmsnorm(zeros({}), ones({1})), "rmsnorm", "()");
  kernels::RmsNormOut f = kernels::rmsnorm(zeros({2, 4}), ones({4}), 1e-6);
  EXPECT_KEEL_ERROR(kernels::rmsnorm_backward(zeros({2, 4}, DType::BF16), zeros({2, 4}),
                                              ones({4}), f.rstd, true, true),
                    "rmsnorm backward", "bf16 (2, 4)", "f32 (2, 4)");
  EXPECT_KEEL_ERROR(
      kernels::rmsnorm_backward(zeros({2, 4}), zeros({2, 4}), ones({4}), zeros({3}), true, true),
      "rstd", "(2,)", "(3,)");
}

}  // namespace
}  // namespace keel
