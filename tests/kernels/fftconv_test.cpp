// FFT long convolution: forward and backward (u, k, D) against a direct
// causal convolution in float64 for T from 1 to 4096, L = T, L < T and
// L = 1, with and without D; finite-difference gradients through autograd;
// half-precision and strided inputs; thread-count independence (bitwise for
// the batch sums dk and dD); bad inputs.
#include "kernels/fftconv.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;

struct Dims {
  int64_t B, C, T, L;
};

size_t at(const Dims& d, int64_t b, int64_t c, int64_t t) {
  return size_t((b * d.C + c) * d.T + t);
}

// y[b,c,t] = sum_{s <= min(t, L-1)} k[c,s] u[b,c,t-s] + D[c] u[b,c,t].
Doubles conv_ref(const Doubles& u, const Doubles& k, const Doubles* D, const Dims& d) {
  Doubles y(size_t(d.B * d.C * d.T), 0.0);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t c = 0; c < d.C; ++c)
      for (int64_t t = 0; t < d.T; ++t) {
        double s = D ? (*D)[size_t(c)] * u[at(d, b, c, t)] : 0.0;
        for (int64_t j = 0; j <= std::min(t, d.L - 1); ++j)
          s += k[size_t(c * d.L + j)] * u[at(d, b, c, t - j)];
        y[at(d, b, c, t)] = s;
      }
  return y;
}

// Gradients of sum(y * dy), directly in float64.
struct RefGrads {
  Doubles du, dk, dD;
};
RefGrads grads_ref(const Doubles& u, const Doubles& k, const Doubles* D, const Doubles& g,
                   const Dims& d) {
  RefGrads r{Doubles(u.size(), 0.0), Doubles(k.size(), 0.0), Doubles(size_t(d.C), 0.0)};
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t c = 0; c < d.C; ++c)
      for (int64_t t = 0; t < d.T; ++t) {
        const double gt = g[at(d, b, c, t)];
        r.dD[size_t(c)] += gt * u[at(d, b, c, t)];
        if (D) r.du[at(d, b, c, t)] += (*D)[size_t(c)] * gt;
        for (int64_t j = 0; j <= std::min(t, d.L - 1); ++j) {
          r.dk[size_t(c * d.L + j)] += gt * u[at(d, b, c, t - j)];
          r.du[at(d, b, c, t - j)] += gt * k[size_t(c * d.L + j)];
        }
      }
  return r;
}

// FFT rounding is absolute rather than per element: each output carries an
// error of about eps_f32 * log2(n) * ||k|| * ||u_window||, so the floor scales
// with sqrt(L) (the norms of L uniform taps and of L inputs, each O(1)) and
// log2 n. Backward sums over b and t grow as sqrt(B T).
double fwd_atol(const Dims& d) {
  const double n = double(kernels::fftconv_size(d.T, d.L));
  return 2e-7 * std::log2(2.0 * n) * (1.0 + std::sqrt(double(d.L)));
}

void check_against_reference(const Dims& d, bool with_D, uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "B=" << d.B << " C=" << d.C << " T=" << d.T << " L=" << d.L << " D=" << with_D);
  Tensor u = testing::uniform({d.B, d.C, d.T}, seed), k = testing::uniform({d.C, d.L}, seed + 1);
  Tensor D = with_D ? testing::uniform({d.C}, seed + 2) : Tensor();
  Tensor dy = testing::uniform({d.B, d.C, d.T}, seed + 3);
  const Doubles ud = testing::to_doubles(u), kd = testing::to_doubles(k),
                gd = testing::to_doubles(dy);
  const Doubles Dd = with_D ? testing::to_doubles(D) : Doubles();
  const Doubles* Dp = with_D ? &Dd : nullptr;

  Tensor y = kernels::fftconv(u, k, D);
  EXPECT_EQ(y.sizes(), u.sizes());
  const double atol = fwd_atol(d);
  EXPECT_TRUE(testing::all_close(testing::to_doubles(y), conv_ref(ud, kd, Dp, d), 1e-5, atol));

  const RefGrads r = grads_ref(ud, kd, Dp, gd, d);
  auto g = kernels::fftconv_backward(u, k, dy, true, true, true, D);
  EXPECT_TRUE(testing::all_close(testing::to_doubles(g.du), r.du, 1e-5, atol)) << "du";
  // dk[s] sums B (T - s) products; dD B T products, the latter in f64 directly.
  const double sum_atol = atol * std::sqrt(double(d.B * d.T));
  EXPECT_TRUE(testing::all_close(testing::to_doubles(g.dk), r.dk, 1e-5, sum_atol)) << "dk";
  EXPECT_TRUE(testing::all_close(testing::to_doubles(g.dD), r.dD, 1e-5, 1e-5)) << "dD";
}

TEST(FftConv, MatchesDirectConvolutionForShortSequences) {
  uint64_t seed = 100;
  for (int64_t T : {1, 2, 3, 17, 64})
    for (int64_t L : {T, std::max<int64_t>(1, T / 3), int64_t(1)})
      for (bool with_D : {false, true}) check_against_reference({2, 3, T, L}, with_D, seed += 10);
}

TEST(FftConv, MatchesDirectConvolutionForLongSequences) {
  // One batch row and few channels keep the O(T L) reference cheap.
  uint64_t seed = 500;
  for (int64_t T : {1000, 4096})
    for (int64_t L : {T, T / 4 + 1})
      for (bool with_D : {false, true}) check_against_reference({1, 3, T, L}, with_D, seed += 10);
}

TEST(FftConv, FiniteDifferenceGradients) {
  const Dims dims[] = {{2, 3, 7, 7}, {2, 3, 9, 4}, {1, 5, 16, 1}, {3, 1, 5, 2}};
  uint64_t seed = 700;
  for (const Dims& d : dims)
    for (bool with_D : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "B=" << d.B << " C=" << d.C << " T=" << d.T
                                        << " L=" << d.L << " D=" << with_D);
      std::vector<Tensor> inputs{leaf({d.B, d.C, d.T}, ++seed), leaf({d.C, d.L}, ++seed)};
      if (with_D) inputs.push_back(leaf({d.C}, ++seed));
      testing::Tolerance tol;
      tol.fwd_atol = fwd_atol(d);  // FFT rounding, see fwd_atol
      check_op(
          [](const std::vector<Tensor>& in) {
            return fftconv(in[0], in[1], in.size() > 2 ? in[2] : Tensor());
          },
          [&](const std::vector<Doubles>& in) {
            return conv_ref(in[0], in[1], in.size() > 2 ? &in[2] : nullptr, d);
          },
          inputs, tol);
    }
}

TEST(FftConv, StridedInputs) {
  // Hyena's projections yield (B, T, C): the op reads the transposed view; the
  // filter comes as the transpose of (L, C) and D as every other element.
  const Dims d{2, 5, 12, 6};
  Tensor u = testing::uniform({2, 12, 5}, 801).transpose(1, 2);  // (2, 5, 12)
  Tensor k = testing::uniform({6, 5}, 802).transpose(0, 1);      // (5, 6)
  Tensor D = testing::uniform({5, 2}, 803).select(1, 0);         // (5), stride 2
  ASSERT_FALSE(u.is_contiguous());
  ASSERT_FALSE(k.is_contiguous());
  ASSERT_FALSE(D.is_contiguous());
  for (Tensor* t : {&u, &k, &D}) t->set_requires_grad(true);
  testing::Tolerance tol;
  tol.fwd_atol = fwd_atol(d);
  check_op([](const std::vector<Tensor>& in) { return fftconv(in[0], in[1], in[2]); },
           [&](const std::vector<Doubles>& in) { return conv_ref(in[0], in[1], &in[2], d); },
           {u, k, D}, tol);
  // A strided dy in the kernel directly.
  Tensor dy = testing::uniform({2, 12, 5}, 804).transpose(1, 2);
  auto g = kernels::fftconv_backward(u.detach(), k.detach(), dy, true, true, true, D.detach());
  const Doubles Dd = testing::to_doubles(D);
  RefGrads r =
      grads_ref(testing::to_doubles(u), testing::to_doubles(k), &Dd, testing::to_doubles(dy), d);
  EXPECT_TRUE(testing::all_close(testing::to_doubles(g.du), r.du, 1e-5, fwd_atol(d)));
  EXPECT_TRUE(testing::all_close(testing::to_doubles(g.dk), r.dk, 1e-5, 1e-5));
  EXPECT_TRUE(testing::all_close(testing::to_doubles(g.dD), r.dD, 1e-5, 1e-5));
}

TEST(FftConv, SkipTermInBackwardOnlyWithD) {
  Tensor u = testing::uniform({2, 3, 10}, 901), k = testing::uniform({3, 4}, 902);
  Tensor D = testing::uniform({3}, 903), dy = testing::uniform({2, 3, 10}, 904);
  auto plain = kernels::fftconv_backward(u, k, dy, true, false, false);
  auto with_D = kernels::fftconv_backward(u, k, dy, true, false, false, D);
  const Doubles a = testing::to_doubles(plain.du), b = testing::to_doubles(with_D.du);
  const Doubles g = testing::to_doubles(dy), Dd = testing::to_doubles(D);
  Doubles diff(a.size());
  for (size_t i = 0; i < a.size(); ++i) diff[i] = b[i] - a[i];
  Doubles want(a.size());
  for (size_t i = 0; i < a.size(); ++i) want[i] = Dd[(i / 10) % 3] * g[i];
  EXPECT_TRUE(testing::all_close(diff, want, 1e-5, 1e-6));
}

TEST(FftConv, ThreadCountIndependent) {
  // C = 3: the batch is split into chunks per channel (their sums combined
  // in chunk order); C = 70: one task per channel; C = 8: one task per
  // channel with 1 thread, stored filter spectra and row tasks with 4.
  for (const Dims& d : {Dims{6, 3, 300, 300}, Dims{4, 70, 100, 37}, Dims{5, 8, 64, 20}}) {
    SCOPED_TRACE(::testing::Message() << "C=" << d.C);
    Tensor u = testing::uniform({d.B, d.C, d.T}, 1001), k = testing::uniform({d.C, d.L}, 1002);
    Tensor D = testing::uniform({d.C}, 1003), dy = testing::uniform({d.B, d.C, d.T}, 1004);
    const int saved = omp_get_max_threads();
    std::vector<Doubles> runs[2];
    for (int run = 0; run < 2; ++run) {
      omp_set_num_threads(run == 0 ? 1 : 4);
      Tensor y = kernels::fftconv(u, k, D);
      auto g = kernels::fftconv_backward(u, k, dy, true, true, true, D);
      runs[run] = {testing::to_doubles(y), testing::to_doubles(g.du), testing::to_doubles(g.dk),
                   testing::to_doubles(g.dD)};
    }
    omp_set_num_threads(saved);
    const Doubles ud = testing::to_doubles(u), kd = testing::to_doubles(k),
                  Dd = testing::to_doubles(D);
    RefGrads r = grads_ref(ud, kd, &Dd, testing::to_doubles(dy), d);
    EXPECT_TRUE(testing::all_close(runs[0][2], r.dk, 1e-5, fwd_atol(d) * std::sqrt(d.B * d.T)));
    EXPECT_TRUE(testing::all_close(runs[0][3], r.dD, 1e-5, 1e-5));
    // Rows are independent and the batch sums run in a fixed order: bit-identical.
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(runs[0][i], runs[1][i]) << "result " << i;
  }
}

TEST(FftConv, OnlyRequestedGradientsAreComputed) {
  Tensor u = testing::uniform({1, 2, 5}, 1101), k = testing::uniform({2, 3}, 1102);
  Tensor dy = testing::uniform({1, 2, 5}, 1103);
  auto g = kernels::fftconv_backward(u, k, dy, false, true, false);
  EXPECT_FALSE(g.du.defined());
  EXPECT_TRUE(g.dk.defined());
  EXPECT_FALSE(g.dD.defined());
  auto none = kernels::fftconv_backward(u, k, dy, false, false, false);
  EXPECT_FALSE(none.du.defined() || none.dk.defined() || none.dD.defined());
  // Through autograd: a frozen filter gets no gradient, u does.
  Tensor ul = leaf({1, 2, 5}, 1104);
  sum(fftconv(ul, k)).backward();
  EXPECT_TRUE(ul.grad().defined());
  EXPECT_FALSE(k.grad().defined());
}

TEST(FftConv, HalfPrecisionStorageComputesInF32) {
  const Dims d{2, 3, 40, 17};
  for (DType dt : {DType::BF16, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor u = testing::uniform({d.B, d.C, d.T}, 1201, -1, 1, dt);
    Tensor k = testing::uniform({d.C, d.L}, 1202, -1, 1, dt);
    Tensor D = testing::uniform({d.C}, 1203, -1, 1, dt);
    Tensor dy = testing::uniform({d.B, d.C, d.T}, 1204, -1, 1, dt);
    Tensor y = kernels::fftconv(u, k, D);
    EXPECT_EQ(y.dtype(), dt);
    const Doubles ud = testing::to_doubles(u), kd = testing::to_doubles(k),
                  Dd = testing::to_doubles(D), gd = testing::to_doubles(dy);
    // f32 arithmetic on the rounded inputs, then one rounding of each output
    // to bf16 (8 bits: 2^-8 relative) or f16 (11 bits). Outputs are sums of
    // up to 17 O(1) products that may cancel: 2e-2 relative and absolute.
    EXPECT_TRUE(testing::all_close(testing::to_doubles(y), conv_ref(ud, kd, &Dd, d), 2e-2, 2e-2));
    auto g = kernels::fftconv_backward(u, k, dy, true, true, true, D);
    EXPECT_EQ(g.du.dtype(), dt);
    EXPECT_EQ(g.dk.dtype(), dt);
    EXPECT_EQ(g.dD.dtype(), dt);
    RefGrads r = grads_ref(ud, kd, &Dd, gd, d);
    EXPECT_TRUE(testing::all_close(testing::to_doubles(g.du), r.du, 2e-2, 2e-2));
    // Sums of up to B T = 80 products, O(5): one output rounding, 2e-2 relative, 0.1 absolute.
    EXPECT_TRUE(testing::all_close(testing::to_doubles(g.dk), r.dk, 2e-2, 1e-1));
    EXPECT_TRUE(testing::all_close(testing::to_doubles(g.dD), r.dD, 2e-2, 1e-1));
  }
}

TEST(FftConv, BadInputsNameShapes) {
  Tensor u = zeros({2, 3, 8}), k = zeros({3, 4});
  EXPECT_KEEL_ERROR(kernels::fftconv(zeros({3, 8}), k), "fftconv", "u", "(B, C, T)", "(3, 8)");
  EXPECT_KEEL_ERROR(kernels::fftconv(u, zeros({3, 1, 4})), "fftconv", "(C, L)", "(3, 1, 4)");
  EXPECT_KEEL_ERROR(kernels::fftconv(u, zeros({4, 4})), "fftconv", "(4, 4)", "(2, 3, 8)", "C = 3");
  EXPECT_KEEL_ERROR(kernels::fftconv(u, zeros({3, 9})), "fftconv", "(3, 9)", "L <= T", "T = 8");
  EXPECT_KEEL_ERROR(kernels::fftconv(u, zeros({3, 0})), "fftconv", "(3, 0)", "1 <= L");
  EXPECT_KEEL_ERROR(kernels::fftconv(u, k, zeros({4})), "fftconv", "D", "(4,)", "(2, 3, 8)");
  EXPECT_KEEL_ERROR(kernels::fftconv(u, k, zeros({3, 1})), "fftconv", "D", "(3, 1)");
  EXPECT_KEEL_ERROR(kernels::fftconv(u, k.to(DType::BF16)), "fftconv", "f32", "bf16");
  EXPECT_KEEL_ERROR(kernels::fftconv(u, k, zeros({3}, DType::F16)), "fftconv", "D", "f16");
  EXPECT_KEEL_ERROR(kernels::fftconv(zeros({2, 3, 8}, DType::I32), zeros({3, 4}, DType::I32)),
                    "fftconv", "i32");
  EXPECT_KEEL_ERROR(kernels::fftconv_backward(u, k, zeros({2, 3, 7}), true, true, true),
                    "fftconv backward", "dy", "(2, 3, 7)", "(2, 3, 8)");
  EXPECT_KEEL_ERROR(
      kernels::fftconv_backward(u, k, zeros({2, 3, 8}, DType::BF16), true, true, true),
      "fftconv backward", "dy", "bf16");
  // Through autograd, the same messages.
  EXPECT_KEEL_ERROR(fftconv(u, zeros({3, 9})), "fftconv", "L <= T");
}

TEST(FftConv, EmptyBatch) {
  Tensor u = zeros({0, 3, 8}), k = testing::uniform({3, 4}, 1301);
  EXPECT_EQ(kernels::fftconv(u, k).sizes(), u.sizes());
  auto g = kernels::fftconv_backward(u, k, zeros({0, 3, 8}), true, true, true);
  EXPECT_EQ(g.du.sizes(), u.sizes());
  EXPECT_EQ(testing::to_doubles(g.dk), Doubles(12, 0.0));
  EXPECT_EQ(testing::to_doubles(g.dD), Doubles(3, 0.0));
}

}  // namespace
}  // namespace keel
