// Fused LayerNorm: forward against a float64 reference and gradients for x,
// weight and bias against its finite differences, with and without bias,
// strided input, a large mean, thread-count independence of the parameter
// gradients, bf16 storage, and bad-input errors.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "kernels/layernorm.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;
using testing::Tolerance;

// Row-major layernorm of x (R, C); b empty means no bias.
Doubles layernorm_ref(const Doubles& x, const Doubles& w, const Doubles& b, size_t C, double eps) {
  Doubles y(x.size());
  for (size_t r = 0; r < x.size() / C; ++r) {
    const double* xr = x.data() + r * C;
    double mean = 0, var = 0;
    for (size_t i = 0; i < C; ++i) mean += xr[i];
    mean /= double(C);
    for (size_t i = 0; i < C; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= double(C);
    const double rstd = 1 / std::sqrt(var + eps);
    for (size_t i = 0; i < C; ++i)
      y[r * C + i] = (xr[i] - mean) * rstd * w[i] + (b.empty() ? 0.0 : b[i]);
  }
  return y;
}

TEST(LayerNorm, ForwardAndBackwardWithAndWithoutBias) {
  const Shape shapes[] = {{8}, {3, 8}, {2, 3, 16}, {5, 1}, {2, 100}};
  for (const Shape& s : shapes) {
    for (bool with_bias : {true, false}) {
      SCOPED_TRACE(shape_str(s) + (with_bias ? " with bias" : " no bias"));
      const int64_t C = s.back();
      Tensor x = leaf(s, 31, -2, 2);
      Tensor w = leaf({C}, 32, 0.5, 1.5);
      Tensor b = leaf({C}, 33);
      std::vector<Tensor> inputs{x, w};
      if (with_bias) inputs.push_back(b);
      auto ref = [&](const std::vector<Doubles>& in) {
        return layernorm_ref(in[0], in[1], with_bias ? in[2] : Doubles{}, size_t(C), 1e-5);
      };
      check_op(
          [&](const std::vector<Tensor>& in) {
            return layernorm(in[0], in[1], with_bias ? in[2] : Tensor(), 1e-5);
          },
          ref, inputs);
    }
  }
}

TEST(LayerNorm, NonContiguousInput) {
  Tensor base = testing::uniform({16, 3}, 41, -2, 2);
  Tensor x = base.transpose(0, 1);  // (3, 16), strides (1, 3)
  x.set_requires_grad(true);
  ASSERT_FALSE(x.is_contiguous());
  Tensor w = leaf({16}, 42, 0.5, 1.5);
  Tensor b = leaf({16}, 43);
  auto ref = [](const std::vector<Doubles>& in) {
    return layernorm_ref(in[0], in[1], in[2], 16, 1e-5);
  };
  check_op([](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], in[2]); }, ref,
           {x, w, b});
}

TEST(LayerNorm, OnlyParametersRequireGrad) {
  Tensor x = testing::uniform({4, 8}, 44);
  Tensor w = leaf({8}, 45, 0.5, 1.5);
  auto ref = [](const std::vector<Doubles>& in) {
    return layernorm_ref(in[0], in[1], Doubles{}, 8, 1e-5);
  };
  check_op([](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], Tensor()); }, ref,
           {x, w});
  EXPECT_FALSE(x.grad().defined());
}

TEST(LayerNorm, LargeMeanUsesCentredVariance) {
  // |mean| = 1000 and std ~ 0.6: E[x^2] - E[x]^2 would lose all of var in f32.
  Tensor x = testing::uniform({4, 32}, 46, 999, 1001);
  Tensor w = testing::uniform({32}, 47, 0.5, 1.5);
  Tensor b = testing::uniform({32}, 48);
  auto ref = [](const std::vector<Doubles>& in) {
    return layernorm_ref(in[0], in[1], in[2], 32, 1e-5);
  };
  Tolerance tol;
  // The f32 mean of values near 1000 is off by ~1e-4, times rstd ~ 1.7.
  tol.fwd_rtol = 1e-3;
  tol.fwd_atol = 1e-3;
  check_op([](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], in[2]); }, ref,
           {x, w, b}, tol);
}

TEST(LayerNorm, ParameterGradientsIndependentOfThreadCount) {
  // 1000 * 64 elements: parallel over 125 row blocks.
  const Shape s{1000, 64};
  Tensor x = testing::uniform(s, 51, -2, 2);
  Tensor dy = testing::uniform(s, 52);
  Tensor w = testing::uniform({64}, 53, 0.5, 1.5);
  Tensor b = testing::uniform({64}, 54);
  const int saved = omp_get_max_threads();
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    kernels::LayerNormOut f = kernels::layernorm(x, w, b, 1e-5);
    kernels::LayerNormGrads g =
        kernels::layernorm_backward(dy, x, w, f.mean, f.rstd, true, true, true);
    omp_set_num_threads(saved);
    return std::vector<Doubles>{testing::to_doubles(f.y), testing::to_doubles(g.dx),
                                testing::to_doubles(g.dweight), testing::to_doubles(g.dbias)};
  };
  std::vector<Doubles> one = run(1), three = run(3);
  for (size_t k = 0; k < one.size(); ++k) EXPECT_EQ(one[k], three[k]) << "output " << k;
  // dweight and dbias against a float64 sum over rows.
  Doubles xd = testing::to_doubles(x), gd = testing::to_doubles(dy);
  Doubles dw(64, 0.0), db(64, 0.0);
  for (size_t r = 0; r < 1000; ++r) {
    const double* xr = xd.data() + r * 64;
    double mean = 0, var = 0;
    for (size_t i = 0; i < 64; ++i) mean += xr[i];
    mean /= 64;
    for (size_t i = 0; i < 64; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    const double rstd = 1 / std::sqrt(var / 64 + 1e-5);
    for (size_t i = 0; i < 64; ++i) {
      dw[i] += gd[r * 64 + i] * (xr[i] - mean) * rstd;
      db[i] += gd[r * 64 + i];
    }
  }
  // f32 partial sums over 8-row blocks: 1e-5 relative plus cancellation headroom.
  EXPECT_TRUE(testing::all_close(one[2], dw, 1e-5, 1e-5));
  EXPECT_TRUE(testing::all_close(one[3], db, 1e-5, 1e-5));
}

TEST(LayerNorm, Bf16StorageComputesInF32) {
  Tensor x = testing::uniform({4, 32}, 61, -2, 2, DType::BF16);
  x.set_requires_grad(true);
  Tensor w = leaf({32}, 62, 0.5, 1.5);  // f32 parameters beside bf16 activations
  Tensor b = testing::uniform({32}, 63, -1, 1, DType::BF16);
  b.set_requires_grad(true);
  auto ref = [](const std::vector<Doubles>& in) {
    return layernorm_ref(in[0], in[1], in[2], 32, 1e-5);
  };
  Tolerance tol;
  // bf16 output: f32 math, then one rounding to 8 significant bits (2^-8 relative).
  tol.fwd_rtol = 4e-3;
  tol.fwd_atol = 1e-5;
  // bf16 gradients: dy and dx are rounded to bf16 and dx cancels across the row.
  tol.bwd_rtol = 3e-2;
  tol.bwd_atol = 2e-2;
  Tensor y = check_op(
      [](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], in[2]); }, ref,
      {x, w, b}, tol);
  EXPECT_EQ(y.dtype(), DType::BF16);
  EXPECT_EQ(x.grad().dtype(), DType::BF16);
  EXPECT_EQ(w.grad().dtype(), DType::F32);
  EXPECT_EQ(b.grad().dtype(), DType::BF16);
}

TEST(LayerNorm, BadInputsNameShapes) {
  EXPECT_KEEL_ERROR(layernorm(zeros({2, 4}), ones({5}), Tensor()), "layernorm", "weight",
                    "(4,)", "f32 (2, 4)", "f32 (5,)");
  EXPECT_KEEL_ERROR(layernorm(zeros({2, 4}), ones({4}), zeros({2, 4})), "bias", "(4,)",
                    "f32 (2, 4)");
  EXPECT_KEEL_ERROR(layernorm(zeros({2, 4}, DType::I32), ones({4}), Tensor()), "layernorm",
                    "i32 (2, 4)");
  EXPECT_KEEL_ERROR(layernorm(zeros({2, 4}), ones({4}, DType::I64), Tensor()), "weight",
                    "i64 (4,)");
  EXPECT_KEEL_ERROR(layernorm(zeros({2, 4}), Tensor(), Tensor()), "weight", "(2, 4)");
  EXPECT_KEEL_ERROR(layernorm(zeros({2, 0}), ones({0}), Tensor()), "empty", "(2, 0)");
  kernels::LayerNormOut f = kernels::layernorm(zeros({2, 4}), ones({4}), Tensor(), 1e-5);
  EXPECT_KEEL_ERROR(
      kernels::layernorm_backward(zeros({4, 2}), zeros({2, 4}), ones({4}), f.mean, f.rstd, false,
                                  true, true),
      "layernorm backward", "(4, 2)", "(2, 4)");
  EXPECT_KEEL_ERROR(
      kernels::layernorm_backward(zeros({2, 4}), zeros({2, 4}), ones({4}), zeros({4}), f.rstd,
                                  false, true, true),
      "mean", "(2,)", "(4,)");
}

}  // namespace
}  // namespace keel
