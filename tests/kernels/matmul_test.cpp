// matmul, linear and the gemm kernel: forward against a float64 NumPy-style
// reference, gradients against float64 finite differences; 2-D, batched,
// broadcast batch dims, 1-D operands, transposed and strided views (the BLAS
// Trans path and the copy fallback), bf16, beta accumulation, bad inputs.
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;
using testing::Tolerance;
using testing::uniform;

// NumPy matmul of row-major doubles: 1-D operands promoted, batch broadcast.
Doubles matmul_ref(const Doubles& a, Shape as, const Doubles& b, Shape bs) {
  if (as.size() == 1) as.insert(as.begin(), 1);
  if (bs.size() == 1) bs.push_back(1);
  const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
  EXPECT_EQ(bs[bs.size() - 2], k);
  Shape ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  const size_t nd = std::max(ab.size(), bb.size());
  ab.insert(ab.begin(), nd - ab.size(), 1);
  bb.insert(bb.begin(), nd - bb.size(), 1);
  Shape ob(nd);
  for (size_t d = 0; d < nd; ++d) ob[d] = std::max(ab[d], bb[d]);
  Doubles out;
  for (int64_t i = 0; i < shape_numel(ob); ++i) {
    int64_t r = i, ia = 0, ib = 0, sa = 1, sb = 1;
    for (int64_t d = int64_t(nd) - 1; d >= 0; --d) {
      int64_t idx = r % ob[size_t(d)];
      r /= ob[size_t(d)];
      ia += (ab[size_t(d)] == 1 ? 0 : idx) * sa;
      ib += (bb[size_t(d)] == 1 ? 0 : idx) * sb;
      sa *= ab[size_t(d)];
      sb *= bb[size_t(d)];
    }
    for (int64_t p = 0; p < m; ++p)
      for (int64_t q = 0; q < n; ++q) {
        double s = 0;
        for (int64_t t = 0; t < k; ++t)
          s += a[size_t((ia * m + p) * k + t)] * b[size_t((ib * k + t) * n + q)];
        out.push_back(s);
      }
  }
  return out;
}

// Runs check_op on matmul(a, b) with the reference above.
Tensor check_matmul(const Tensor& a, const Tensor& b, const Tolerance& tol = {}) {
  Shape as = a.sizes(), bs = b.sizes();
  return check_op([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
                  [&](const std::vector<Doubles>& in) { return matmul_ref(in[0], as, in[1], bs); },
                  {a, b}, tol);
}

// A (rows, cols) leaf that is the transpose of a contiguous (cols, rows)
// tensor: strides (1, rows), the layout BLAS takes as Trans.
Tensor transposed_leaf(int64_t rows, int64_t cols, uint64_t seed) {
  Tensor t = uniform({cols, rows}, seed).transpose(0, 1);
  t.set_requires_grad(true);
  return t;
}

TEST(Matmul, TwoD) {
  Tensor y = check_matmul(leaf({3, 4}, 1), leaf({4, 5}, 2));
  EXPECT_EQ(y.sizes(), (Shape{3, 5}));
}

TEST(Matmul, Batched) {
  Tensor y = check_matmul(leaf({2, 3, 4}, 1), leaf({2, 4, 5}, 2));
  EXPECT_EQ(y.sizes(), (Shape{2, 3, 5}));
}

TEST(Matmul, BroadcastBatchDims) {
  struct Case {
    Shape a, b, out;
  };
  const Case cases[] = {
      {{2, 1, 3, 4}, {3, 4, 5}, {2, 3, 3, 5}},  // both broadcast: gradients summed by sum_to
      {{3, 4}, {2, 4, 5}, {2, 3, 5}},           // shared lhs
      {{2, 3, 4}, {4, 5}, {2, 3, 5}},           // shared rhs: one GEMM over B*M rows
      {{1, 3, 4}, {2, 4, 5}, {2, 3, 5}},        // size-1 batch dim
      {{2, 2, 3, 4}, {2, 1, 4, 5}, {2, 2, 3, 5}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_str(c.a) + " @ " + shape_str(c.b));
    Tensor y = check_matmul(leaf(c.a, 3), leaf(c.b, 4));
    EXPECT_EQ(y.sizes(), c.out);
  }
}

TEST(Matmul, OneDOperandsPromoteAsNumPy) {
  struct Case {
    Shape a, b, out;
  };
  const Case cases[] = {
      {{4}, {4, 5}, {5}},       {{3, 4}, {4}, {3}},       {{4}, {4}, {}},
      {{4}, {2, 4, 5}, {2, 5}}, {{2, 3, 4}, {4}, {2, 3}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_str(c.a) + " @ " + shape_str(c.b));
    Tensor y = check_matmul(leaf(c.a, 5), leaf(c.b, 6));
    EXPECT_EQ(y.sizes(), c.out);
  }
}

TEST(Matmul, TransposedViewLeaves) {
  // Both operands transposed (strides (1, ld)): forward and both gradients
  // go through BLAS's Trans flags, and the gradients land on the views.
  Tensor a = transposed_leaf(3, 4, 7), b = transposed_leaf(4, 5, 8);
  EXPECT_FALSE(a.is_contiguous());
  check_matmul(a, b);
  EXPECT_EQ(a.grad().sizes(), (Shape{3, 4}));
  // Batched transposed views, one operand shared (batch broadcast).
  Tensor ab = uniform({2, 4, 3}, 9).transpose(1, 2);  // (2, 3, 4), strides (12, 1, 3)
  ab.set_requires_grad(true);
  check_matmul(ab, transposed_leaf(4, 5, 10));
  Tensor bb = uniform({2, 5, 4}, 11).transpose(1, 2);  // (2, 4, 5), strides (20, 1, 4)
  bb.set_requires_grad(true);
  check_matmul(transposed_leaf(3, 4, 12), bb);
}

TEST(Matmul, StridedOperandsThatBlasCannotTake) {
  // Every other column: strides (8, 2) are neither row- nor column-major, so
  // this operand is the one case that is copied before the GEMM.
  Tensor base = uniform({3, 8}, 12);
  Tensor a = base.as_strided({3, 4}, {8, 2}, 0);
  a.set_requires_grad(true);
  check_matmul(a, leaf({4, 5}, 13));
  // An expanded (stride-0) lhs batch together with a non-BLAS matrix layout.
  Tensor e = uniform({1, 3, 8}, 14).as_strided({1, 3, 4}, {24, 8, 2}, 0).expand({3, 3, 4});
  check_matmul(e, leaf({3, 4, 5}, 15));
}

TEST(Matmul, LargeTransposedOperandsMatchReference) {
  // Big enough that OpenBLAS runs its blocked, threaded kernels with the
  // Trans flags on both sides.
  const int64_t m = 150, k = 200, n = 130;
  Tensor a = uniform({k, m}, 21).transpose(0, 1);  // (M, K) as Trans
  Tensor b = uniform({n, k}, 22).transpose(0, 1);  // (K, N) as Trans
  Doubles ref = matmul_ref(testing::to_doubles(a), {m, k}, testing::to_doubles(b), {k, n});
  // f32 accumulation over K = 200 terms in [-1, 1]: error ~ K * 2^-24 * sqrt-ish growth.
  EXPECT_TRUE(testing::all_close(testing::to_doubles(matmul(a, b)), ref, 1e-4, 1e-4));
  // The same product from contiguous operands: bit-identical inputs, same answer.
  EXPECT_TRUE(testing::all_close(testing::to_doubles(matmul(a.contiguous(), b.contiguous())), ref,
                                 1e-4, 1e-4));
}

TEST(Matmul, ManySmallMatricesRunInParallelOverTheBatch) {
  // 256 tiny GEMMs: the batch-parallel path with single-threaded sgemm inside.
  Tensor a = uniform({4, 64, 6, 5}, 23);
  Tensor b = uniform({64, 5, 7}, 24).transpose(1, 2).contiguous().transpose(1, 2);  // Trans
  Doubles ref = matmul_ref(testing::to_doubles(a), a.sizes(), testing::to_doubles(b), b.sizes());
  // f32 products over K = 5: a few ulps.
  EXPECT_TRUE(testing::all_close(testing::to_doubles(matmul(a, b)), ref, 1e-5, 1e-6));
}

TEST(Matmul, SharedOperandGradientsWithLargeMatrices) {
  // M*N*K = 32^3: the shared operand's gradient is accumulated GEMM by GEMM
  // (beta = 1) instead of through a temporary.
  Tolerance tol;
  tol.fwd_atol = 1e-5;  // f32 accumulation over K = 32
  check_matmul(leaf({32, 32}, 25), uniform({2, 32, 32}, 26), tol);
  // Shared rhs with a transposed (not row-flattenable) batched lhs: same path for dB.
  Tensor at = uniform({2, 32, 32}, 27).transpose(1, 2);
  check_matmul(at, leaf({32, 32}, 28), tol);
}

TEST(Matmul, HalfPrecisionComputesInF32AndRoundsOnce) {
  for (DType dt : {DType::BF16, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor a = uniform({2, 5, 16}, 29).to(dt), b = uniform({16, 3}, 30).to(dt);
    Tensor y = matmul(a, b);
    EXPECT_EQ(y.dtype(), dt);
    Doubles ref = matmul_ref(testing::to_doubles(a), a.sizes(), testing::to_doubles(b), b.sizes());
    Doubles got = testing::to_doubles(y);
    for (size_t i = 0; i < ref.size(); ++i) {
      // Within one ulp (2^-7 bf16, 2^-10 f16 relative) of the exact product
      // rounded to the storage type: f32 accumulation may tip a near-tie.
      float f = float(ref[i]);
      double rounded = dt == DType::BF16 ? double(bf16_to_float(float_to_bf16(f)))
                                         : double(f16_to_float(float_to_f16(f)));
      EXPECT_NEAR(got[i], rounded, std::fabs(rounded) * (dt == DType::BF16 ? 8e-3 : 1e-3) + 1e-6);
    }
  }
  // Gradients flow in bf16 too (shapes and dtype; values checked in f32 above).
  Tensor a = uniform({3, 4}, 31).to(DType::BF16).set_requires_grad(true);
  Tensor b = uniform({4, 2}, 32).to(DType::BF16).set_requires_grad(true);
  sum(matmul(a, b)).backward();
  EXPECT_EQ(a.grad().dtype(), DType::BF16);
  EXPECT_EQ(b.grad().sizes(), (Shape{4, 2}));
}

TEST(Gemm, TransFlagsAlphaBetaAndStridedOut) {
  Tensor a = uniform({2, 4, 3}, 33);  // op(a) = a^T (2, 3, 4)
  Tensor b = uniform({5, 4}, 34);     // op(b) = b^T (4, 5), shared over the batch
  Doubles at = testing::to_doubles(a.transpose(1, 2)), bt = testing::to_doubles(b.transpose(0, 1));
  Doubles prod = matmul_ref(at, {2, 3, 4}, bt, {4, 5});
  Tensor out = uniform({2, 3, 5}, 35);
  Doubles before = testing::to_doubles(out);
  kernels::gemm(a, b, out, true, true, 0.5, 1.0);  // out = 0.5 * a^T b^T + out
  Doubles want(prod.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = 0.5 * prod[i] + before[i];
  // f32 GEMM over K = 4 plus one add: a few ulps.
  EXPECT_TRUE(testing::all_close(testing::to_doubles(out), want, 1e-5, 1e-6));

  // A column-major out (a transposed view) is filled without a copy by
  // computing out^T; beta = 0 ignores the NaNs already there.
  Tensor storage = full({2, 5, 3}, std::nan(""));
  Tensor outt = storage.transpose(1, 2);  // (2, 3, 5), strides (15, 1, 3)
  kernels::gemm(a, b, outt, true, true);
  EXPECT_TRUE(testing::all_close(testing::to_doubles(outt), prod, 1e-5, 1e-6));

  // An out BLAS cannot write (stride 2 in the row): computed aside, copied in.
  Tensor wide = zeros({2, 3, 10});
  Tensor outs = wide.as_strided({2, 3, 5}, {30, 10, 2}, 0);
  kernels::gemm(a, b, outs, true, true);
  EXPECT_TRUE(testing::all_close(testing::to_doubles(outs), prod, 1e-5, 1e-6));
  EXPECT_EQ(testing::to_doubles(wide)[1], 0.0);  // the gaps stay untouched
}

TEST(Gemm, EmptyInnerDimScalesOut) {
  Tensor out = full({2, 3}, 2.0);
  kernels::gemm(zeros({2, 0}), zeros({0, 3}), out, false, false, 1.0, 0.5);
  for (double v : testing::to_doubles(out)) EXPECT_EQ(v, 1.0);
  kernels::gemm(zeros({2, 0}), zeros({0, 3}), out);
  for (double v : testing::to_doubles(out)) EXPECT_EQ(v, 0.0);
}

// y[r, n] = sum_k x[r, k] w[n, k] + bias[n]
Doubles linear_ref(const Doubles& x, const Doubles& w, const Doubles* bias, int64_t n, int64_t k) {
  const int64_t rows = int64_t(x.size()) / k;
  Doubles y(size_t(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double s = bias ? (*bias)[size_t(j)] : 0.0;
      for (int64_t t = 0; t < k; ++t) s += x[size_t(r * k + t)] * w[size_t(j * k + t)];
      y[size_t(r * n + j)] = s;
    }
  return y;
}

TEST(Linear, ThreeDInputWithAndWithoutBias) {
  const int64_t n = 5, k = 4;
  Tensor x = leaf({2, 3, k}, 40), w = leaf({n, k}, 41), bias = leaf({n}, 42);
  Tensor y = check_op(
      [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
      [&](const std::vector<Doubles>& in) { return linear_ref(in[0], in[1], &in[2], n, k); },
      {x, w, bias});
  EXPECT_EQ(y.sizes(), (Shape{2, 3, n}));
  y = check_op(
      [](const std::vector<Tensor>& in) { return linear(in[0], in[1]); },
      [&](const std::vector<Doubles>& in) { return linear_ref(in[0], in[1], nullptr, n, k); },
      {x, w});
  EXPECT_EQ(y.sizes(), (Shape{2, 3, n}));
}

TEST(Linear, OneDInputTransposedWeightAndStridedInput) {
  const int64_t n = 3, k = 4;
  // w stored as (K, N) and viewed as (N, K): the GEMM takes it as NoTrans.
  Tensor w = transposed_leaf(n, k, 43);
  check_op([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
           [&](const std::vector<Doubles>& in) { return linear_ref(in[0], in[1], &in[2], n, k); },
           {leaf({k}, 44), w, leaf({n}, 45)});
  // x whose leading dims cannot be flattened without a copy.
  Tensor x = uniform({3, 2, k}, 46).transpose(0, 1);  // (2, 3, K)
  x.set_requires_grad(true);
  check_op([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
           [&](const std::vector<Doubles>& in) { return linear_ref(in[0], in[1], &in[2], n, k); },
           {x, w, leaf({n}, 47)});
}

TEST(Linear, OnlyWeightNeedsGradient) {
  // x without grad: backward computes dW and db only.
  Tensor x = uniform({4, 3}, 48), w = leaf({2, 3}, 49), b = leaf({2}, 50);
  check_op([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
           [&](const std::vector<Doubles>& in) { return linear_ref(in[0], in[1], &in[2], 2, 3); },
           {x, w, b});
  EXPECT_FALSE(x.grad().defined());
}

TEST(Matmul, BadInputsNameShapes) {
  EXPECT_KEEL_ERROR(matmul(zeros({2, 3}), zeros({4, 5})), "matmul", "inner dims", "(2, 3)",
                    "(4, 5)");
  EXPECT_KEEL_ERROR(matmul(zeros({2, 3, 4}), zeros({3, 4, 5})), "matmul", "batch", "(2, 3, 4)",
                    "(3, 4, 5)");
  EXPECT_KEEL_ERROR(matmul(zeros({3}), zeros({4})), "matmul", "(3,)", "(4,)");
  EXPECT_KEEL_ERROR(matmul(zeros({2, 3}), zeros({3, 2}, DType::BF16)), "matmul", "f32", "bf16");
  EXPECT_KEEL_ERROR(matmul(zeros({2, 3}, DType::I64), zeros({3, 2}, DType::I64)), "matmul", "i64");
  EXPECT_KEEL_ERROR(linear(zeros({2, 5}), zeros({4, 6})), "linear", "(2, 5)", "(4, 6)");
  EXPECT_KEEL_ERROR(linear(zeros({2, 6}), zeros({4, 6}), zeros({3})), "linear", "bias", "(3,)");
  Tensor out = zeros({2, 4});
  EXPECT_KEEL_ERROR(kernels::gemm(zeros({2, 3}), zeros({3, 5}), out), "gemm", "(2, 4)", "(2, 5)");
  EXPECT_KEEL_ERROR(kernels::gemm(zeros({2, 3}), zeros({3, 5}), out, true), "gemm", "inner dims",
                    "(3, 2)", "(3, 5)");
  Tensor bcast = zeros({1, 5}).expand({2, 5});
  EXPECT_KEEL_ERROR(kernels::gemm(zeros({2, 3}), zeros({3, 5}), bcast), "gemm", "broadcast");
}

}  // namespace
}  // namespace keel
