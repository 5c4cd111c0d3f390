// Depthwise causal conv1d: forward and backward (x, weight, bias) against a
// float64 reference over several filter lengths, with and without bias;
// strided and half-precision inputs; thread-count independence; bad inputs.
#include "kernels/conv1d.h"

#include <gtest/gtest.h>
#include <omp.h>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;

// y[b,c,t] = bias[c] + sum_k w[c,k] * x[b,c,t-(K-1)+k], zero left padding.
Doubles conv_ref(const Doubles& x, const Doubles& w, const Doubles* bias, int64_t B, int64_t C,
                 int64_t T, int64_t K) {
  Doubles y(size_t(B * C * T), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < T; ++t) {
        double s = bias ? (*bias)[size_t(c)] : 0.0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t src = t - (K - 1) + k;
          if (src >= 0) s += w[size_t(c * K + k)] * x[size_t((b * C + c) * T + src)];
        }
        y[size_t((b * C + c) * T + t)] = s;
      }
  return y;
}

void check_conv(int64_t B, int64_t C, int64_t T, int64_t K, bool with_bias, uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "B=" << B << " C=" << C << " T=" << T << " K=" << K << " bias=" << with_bias);
  Tensor x = leaf({B, C, T}, seed);
  Tensor w = leaf({C, K}, seed + 1);
  Tensor bias = with_bias ? leaf({C}, seed + 2) : Tensor();
  std::vector<Tensor> inputs{x, w};
  if (with_bias) inputs.push_back(bias);
  check_op(
      [&](const std::vector<Tensor>& in) {
        return causal_conv1d(in[0], in[1], in.size() > 2 ? in[2] : Tensor());
      },
      [&](const std::vector<Doubles>& in) {
        return conv_ref(in[0], in[1], in.size() > 2 ? &in[2] : nullptr, B, C, T, K);
      },
      inputs);
}

TEST(Conv1d, MatchesReferenceForSeveralFilterLengths) {
  for (int64_t K : {1, 2, 3, 4, 8})
    for (bool with_bias : {false, true}) check_conv(2, 3, 11, K, with_bias, uint64_t(K * 7));
}

TEST(Conv1d, FilterLongerThanSequence) {
  // Every output reads some of the zero padding.
  check_conv(1, 2, 3, 6, true, 91);
  check_conv(2, 1, 1, 4, false, 92);
}

TEST(Conv1d, StridedInputFromBTCLayout) {
  // Mamba's in-projection yields (B, T, C); the conv reads the transposed view.
  Tensor x = testing::uniform({2, 9, 4}, 11).transpose(1, 2);  // (2, 4, 9), not contiguous
  ASSERT_FALSE(x.is_contiguous());
  x.set_requires_grad(true);
  Tensor w = leaf({4, 3}, 12), bias = leaf({4}, 13);
  check_op(
      [](const std::vector<Tensor>& in) { return causal_conv1d(in[0], in[1], in[2]); },
      [](const std::vector<Doubles>& in) { return conv_ref(in[0], in[1], &in[2], 2, 4, 9, 3); },
      {x, w, bias});
}

TEST(Conv1d, LargeInputParallelMatchesReferenceAndIsThreadIndependent) {
  const int64_t B = 4, C = 64, T = 512, K = 4;
  Tensor x = testing::uniform({B, C, T}, 21), w = testing::uniform({C, K}, 22);
  Tensor bias = testing::uniform({C}, 23), dy = testing::uniform({B, C, T}, 24);
  Doubles xd = testing::to_doubles(x), wd = testing::to_doubles(w), bd = testing::to_doubles(bias);
  Doubles y = testing::to_doubles(kernels::causal_conv1d(x, w, bias));
  // K + 1 f32 terms of O(1) per output.
  EXPECT_TRUE(testing::all_close(y, conv_ref(xd, wd, &bd, B, C, T, K), 1e-6, 1e-6));

  // Analytic gradients of sum(y * dy) in float64.
  Doubles gd = testing::to_doubles(dy);
  Doubles dx(xd.size(), 0.0), dw(wd.size(), 0.0), db(bd.size(), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < T; ++t) {
        const double g = gd[size_t((b * C + c) * T + t)];
        db[size_t(c)] += g;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t src = t - (K - 1) + k;
          if (src < 0) continue;
          dw[size_t(c * K + k)] += g * xd[size_t((b * C + c) * T + src)];
          dx[size_t((b * C + c) * T + src)] += g * wd[size_t(c * K + k)];
        }
      }
  const int saved = omp_get_max_threads();
  std::vector<Doubles> runs[2];
  for (int run = 0; run < 2; ++run) {
    omp_set_num_threads(run == 0 ? 1 : 4);
    auto g = kernels::causal_conv1d_backward(x, w, dy, true, true, true);
    runs[run] = {testing::to_doubles(g.dx), testing::to_doubles(g.dweight),
                 testing::to_doubles(g.dbias)};
  }
  omp_set_num_threads(saved);
  // dx: K f32 terms; dw, db: sums of B*T = 2048 terms, accumulated in f64.
  EXPECT_TRUE(testing::all_close(runs[0][0], dx, 1e-6, 1e-6));
  EXPECT_TRUE(testing::all_close(runs[0][1], dw, 1e-6, 1e-5));
  EXPECT_TRUE(testing::all_close(runs[0][2], db, 1e-6, 1e-5));
  // Per-row sums and the batch sum run in a fixed order: bit-identical.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(runs[0][size_t(i)], runs[1][size_t(i)]) << "gradient " << i;
}

TEST(Conv1d, OnlyRequestedGradientsAreComputed) {
  Tensor x = testing::uniform({1, 2, 5}, 31), w = testing::uniform({2, 3}, 32);
  Tensor dy = testing::uniform({1, 2, 5}, 33);
  auto g = kernels::causal_conv1d_backward(x, w, dy, false, true, false);
  EXPECT_FALSE(g.dx.defined());
  EXPECT_TRUE(g.dweight.defined());
  EXPECT_FALSE(g.dbias.defined());
  // Through autograd: a frozen weight gets no gradient, x does.
  Tensor xl = leaf({1, 2, 5}, 34);
  Tensor y = causal_conv1d(xl, w);
  sum(y).backward();
  EXPECT_TRUE(xl.grad().defined());
  EXPECT_FALSE(w.grad().defined());
}

TEST(Conv1d, HalfPrecisionStorageComputesInF32) {
  for (DType dt : {DType::BF16, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor x = testing::uniform({2, 3, 16}, 41, -1, 1, dt),
           w = testing::uniform({3, 4}, 42, -1, 1, dt);
    Tensor bias = testing::uniform({3}, 43, -1, 1, dt);
    Tensor y = kernels::causal_conv1d(x, w, bias);
    EXPECT_EQ(y.dtype(), dt);
    Doubles bd = testing::to_doubles(bias);
    Doubles ref = conv_ref(testing::to_doubles(x), testing::to_doubles(w), &bd, 2, 3, 16, 4);
    // Exact f32 arithmetic on the rounded inputs, one rounding of the output:
    // bf16 keeps 8 bits, f16 11; outputs are O(1) with sums that may cancel.
    EXPECT_TRUE(testing::all_close(testing::to_doubles(y), ref, 1e-2, 1e-2));
  }
}

TEST(Conv1d, BadInputsNameShapes) {
  Tensor x = zeros({2, 3, 8}), w = zeros({3, 4});
  EXPECT_KEEL_ERROR(causal_conv1d(zeros({3, 8}), w), "causal_conv1d", "(B, C, T)", "(3, 8)");
  EXPECT_KEEL_ERROR(causal_conv1d(x, zeros({4, 4})), "causal_conv1d", "(4, 4)", "(2, 3, 8)");
  EXPECT_KEEL_ERROR(causal_conv1d(x, zeros({3, 1, 4})), "causal_conv1d", "(C, K)", "(3, 1, 4)");
  EXPECT_KEEL_ERROR(causal_conv1d(x, zeros({3, 0})), "causal_conv1d", "(3, 0)", "K >= 1");
  EXPECT_KEEL_ERROR(causal_conv1d(x, w, zeros({4})), "causal_conv1d", "bias", "(4,)", "(2, 3, 8)");
  EXPECT_KEEL_ERROR(causal_conv1d(x, w.to(DType::BF16)), "causal_conv1d", "f32", "bf16");
  EXPECT_KEEL_ERROR(causal_conv1d(zeros({2, 3, 8}, DType::I32), zeros({3, 4}, DType::I32)),
                    "causal_conv1d", "i32");
  EXPECT_KEEL_ERROR(kernels::causal_conv1d_backward(x, w, zeros({2, 3, 7}), true, true, true), "dy",
                    "(2, 3, 7)", "(2, 3, 8)");
}

}  // namespace
}  // namespace keel
