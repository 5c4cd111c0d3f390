// cuBLAS / cuBLASLt GEMMs against the CPU oracle (OpenBLAS) on identical
// inputs: every transpose combination, alpha/beta, batched, broadcast and
// shared-operand batches, operands and outputs BLAS cannot take directly,
// empty sums, bf16/f16, TF32, matmul's 1-D forms, linear (the bias in
// cuBLASLt's epilogue), linear_bias_gelu, and matmul/linear backward through
// autograd. Outputs start as NaN, so an element the GPU fails to write fails.
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "autograd/ops.h"
#include "kernels/elementwise.h"
#include "tests/cuda/parity.h"

namespace keel {
namespace {

using cuda_test::expect_close;
using cuda_test::gpu;
using cuda_test::kNaN;
using cuda_test::poison_device_memory;
using cuda_test::Tol;
using testing::to_doubles;

const DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16};

// GEMM tolerances on inputs in [-1, 1], K products per result:
//   f32:  both sides accumulate in f32 but in different orders (OpenBLAS's
//         and cuBLAS's tilings); every partial sum is at most K in magnitude
//         and rounds with relative error 2^-24, so results may differ by a
//         few times K * 2^-24 in absolute terms: 2e-6 * K, and 1e-5 relative.
//   bf16: inputs are exact in both; the f32 sums differ as above and then
//         round once to bf16, where one step is up to 2^-7 of the value: 1e-2.
//   f16:  likewise with one step up to 2^-10 of the value: 2e-3.
Tol gemm_tol(DType dt, int64_t k) {
  const double atol = 2e-6 * double(std::max<int64_t>(k, 1));
  switch (dt) {
    case DType::BF16:
      return {1e-2, atol};
    case DType::F16:
      return {2e-3, atol};
    default:
      return {1e-5, atol};
  }
}

// TF32 products keep 10 mantissa bits (relative error up to 2^-10 per
// product); with random signs the error of K of them grows like sqrt(K).
Tol tf32_tol(int64_t k) { return {1e-2, 2e-3 * std::sqrt(double(k))}; }

using ViewFn = std::function<Tensor(const Tensor&)>;
Tensor same(const Tensor& t) { return t; }

enum class OutLayout { kRowMajor, kColMajor, kStrided };

// The base tensor an output of `shape` is a view of, and that view.
Shape out_base_shape(Shape s, OutLayout l) {
  if (l == OutLayout::kColMajor) std::swap(s[s.size() - 1], s[s.size() - 2]);
  if (l == OutLayout::kStrided) s.push_back(2);  // every other element: strides (2N, 2)
  return s;
}
Tensor out_view(const Tensor& base, OutLayout l) {
  if (l == OutLayout::kColMajor) return base.transpose(-2, -1);
  if (l == OutLayout::kStrided) return base.select(-1, 0);
  return base;
}

// Runs kernels::gemm on the CPU and the GPU with the same inputs (the views
// av/bv of the same base tensors) and compares the whole output base: with
// beta == 0 both bases start as NaN (the GEMM must ignore it), otherwise
// with the same random values.
void check_gemm(const std::string& what, DType dt, const Shape& a_base, const Shape& b_base,
                const ViewFn& av, const ViewFn& bv, bool ta, bool tb, double alpha = 1.0,
                double beta = 0.0, OutLayout layout = OutLayout::kRowMajor,
                const Tol* tol_override = nullptr) {
  static uint64_t seed = 1000;
  const Tensor A = testing::uniform(a_base, ++seed, -1.0, 1.0, dt);
  const Tensor B = testing::uniform(b_base, ++seed, -1.0, 1.0, dt);
  const Tensor Ag = A.to(gpu()), Bg = B.to(gpu());
  const Tensor a = av(A), b = bv(B), ag = av(Ag), bg = bv(Bg);
  const Tensor opa = ta ? a.transpose(-2, -1) : a, opb = tb ? b.transpose(-2, -1) : b;
  const Shape out_shape = kernels::matmul_shape(opa, opb);
  const Shape base_shape = out_base_shape(out_shape, layout);
  Tensor base = beta == 0.0 ? full(base_shape, kNaN, dt)
                            : testing::uniform(base_shape, ++seed, -1.0, 1.0, dt);
  Tensor base_g = base.to(gpu());
  poison_device_memory();
  Tensor out = out_view(base, layout), out_g = out_view(base_g, layout);
  kernels::gemm(a, b, out, ta, tb, alpha, beta);
  kernels::gemm(ag, bg, out_g, ta, tb, alpha, beta);
  const int64_t k = opa.size(-1);
  const Tol tol = tol_override ? *tol_override : gemm_tol(dt, k);
  expect_close(base_g, base, tol,
               what + " " + dtype_name(dt) + (ta ? " a^T" : " a") + (tb ? " b^T" : " b") +
                   " alpha " + std::to_string(alpha) + " beta " + std::to_string(beta));
}

constexpr int64_t M = 37, N = 29, K = 53;  // odd: no size is a tile multiple

Shape stored(bool t, int64_t rows, int64_t cols) {
  return t ? Shape{cols, rows} : Shape{rows, cols};
}

TEST(CudaGemm, EveryTransposeCombination) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        check_gemm("2-D", dt, stored(ta, M, K), stored(tb, K, N), same, same, ta, tb);
}

TEST(CudaGemm, AlphaBetaAndOutputLayouts) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        check_gemm("accumulate", dt, stored(ta, M, K), stored(tb, K, N), same, same, ta, tb, 0.5,
                   2.0);
        // A column-major out swaps the operands; a strided one goes through a temporary.
        check_gemm("column-major out", dt, stored(ta, M, K), stored(tb, K, N), same, same, ta, tb,
                   1.0, 0.0, OutLayout::kColMajor);
        check_gemm("column-major out, beta", dt, stored(ta, M, K), stored(tb, K, N), same, same, ta,
                   tb, -1.5, 1.0, OutLayout::kColMajor);
        check_gemm("strided out", dt, stored(ta, M, K), stored(tb, K, N), same, same, ta, tb, 1.0,
                   0.5, OutLayout::kStrided);
        check_gemm("strided out, beta 0", dt, stored(ta, M, K), stored(tb, K, N), same, same, ta,
                   tb, 1.0, 0.0, OutLayout::kStrided);
      }
    }
  }
}

TEST(CudaGemm, BatchedAndBroadcast) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        auto sa = [&](Shape batch) {
          Shape s = stored(ta, M, K);
          batch.insert(batch.end(), s.begin(), s.end());
          return batch;
        };
        auto sb = [&](Shape batch) {
          Shape s = stored(tb, K, N);
          batch.insert(batch.end(), s.begin(), s.end());
          return batch;
        };
        check_gemm("batched", dt, sa({4}), sb({4}), same, same, ta, tb);
        check_gemm("broadcast batch", dt, sa({2, 1}), sb({3}), same, same, ta, tb, 1.0, 1.0);
        check_gemm("shared rhs", dt, sa({5, 3}), sb({}), same, same, ta, tb);
        check_gemm("shared lhs", dt, sa({}), sb({2, 3}), same, same, ta, tb);
        // Batch dims that do not merge (a permuted batch): a loop of strided batches.
        check_gemm(
            "permuted batch", dt, sa({3, 2}), sb({2, 3}),
            [](const Tensor& t) { return t.transpose(0, 1); }, same, ta, tb, 0.5, 0.0);
      }
    }
    // One row per matrix with a shared rhs: the batch becomes rows of one GEMM.
    check_gemm("rows of one GEMM", dt, {6, 1, K}, {K, N}, same, same, false, false);
    check_gemm(
        "rows of one GEMM, spaced", dt, {6, 2, K}, {K, N},
        [](const Tensor& t) { return t.narrow(1, 0, 1); }, same, false, false, 1.0, 1.0);
  }
}

TEST(CudaGemm, OperandsBlasCannotTakeDirectly) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes) {
    // Every other column: strides (2K, 2), neither row- nor column-major.
    check_gemm(
        "strided a", dt, {M, K, 2}, {K, N}, [](const Tensor& t) { return t.select(-1, 0); }, same,
        false, false);
    // Rows that overlap (a stride-0 expand inside the matrix), with a broadcast batch.
    check_gemm(
        "expanded b", dt, {M, K}, {1, N}, same,
        [](const Tensor& t) {
          return t.expand({3, K, N});
        },
        false, false);
    check_gemm(
        "expanded a, transposed", dt, {K, 1}, {K, N},
        [](const Tensor& t) {
          return t.expand({K, M});
        },
        same, true, false);
  }
}

TEST(CudaGemm, EmptySumsAndEmptyOutputs) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes) {
    check_gemm("k = 0", dt, {M, 0}, {0, N}, same, same, false, false);  // zeros over NaN
    check_gemm("k = 0, beta", dt, {M, 0}, {0, N}, same, same, false, false, 1.0, 2.0);
    check_gemm("m = 0", dt, {0, K}, {K, N}, same, same, false, false);
  }
}

TEST(CudaGemm, LargerTensorCoreShapes) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes) {
    check_gemm("256^3", dt, {256, 256}, {256, 256}, same, same, false, true);
    check_gemm("batched 4x128x192x320", dt, {4, 128, 320}, {4, 192, 320}, same, same, false, true);
  }
}

TEST(CudaGemm, Tf32IsOptIn) {
  KEEL_SKIP_WITHOUT_CUDA();
  EXPECT_FALSE(kernels::allow_tf32());
  kernels::set_allow_tf32(true);
  const Tol t = tf32_tol(512);
  check_gemm("tf32", DType::F32, {128, 512}, {512, 96}, same, same, false, false, 1.0, 0.0,
             OutLayout::kRowMajor, &t);
  kernels::set_allow_tf32(false);
  // Off again: f32 products are back to f32 accuracy.
  check_gemm("after tf32", DType::F32, {128, 512}, {512, 96}, same, same, false, false);
}

TEST(CudaMatmul, OneDimensionalOperands) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes) {
    Tensor v = testing::uniform({K}, 1, -1, 1, dt), A = testing::uniform({M, K}, 2, -1, 1, dt),
           B = testing::uniform({2, K, N}, 3, -1, 1, dt);
    poison_device_memory();
    const Tol tol = gemm_tol(dt, K);
    expect_close(kernels::matmul(v.to(gpu()), B.to(gpu())), kernels::matmul(v, B), tol, "v @ B");
    expect_close(kernels::matmul(A.to(gpu()), v.to(gpu())), kernels::matmul(A, v), tol, "A @ v");
    expect_close(kernels::matmul(v.to(gpu()), v.to(gpu())), kernels::matmul(v, v), tol, "v @ v");
  }
}

TEST(CudaLinear, BiasInTheEpilogue) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes) {
    for (int64_t n : {int64_t(29), int64_t(64)}) {
      Tensor x = testing::uniform({3, 5, K}, 11, -1, 1, dt);
      Tensor w = testing::uniform({n, K}, 12, -1, 1, dt);
      Tensor b = testing::uniform({n}, 13, -1, 1, dt);
      const Tensor xg = x.to(gpu()), wg = w.to(gpu()), bg = b.to(gpu());
      // The bias adds one more term: K + 1.
      const Tol tol = gemm_tol(dt, K + 1);
      const std::string tag = std::string(dtype_name(dt)) + " N " + std::to_string(n);
      poison_device_memory();
      expect_close(kernels::linear(xg, wg, bg), kernels::linear(x, w, b), tol, "bias " + tag);
      expect_close(kernels::linear(xg, wg), kernels::linear(x, w), tol, "no bias " + tag);
      // x whose rows are not evenly spaced (reshape copies), and a transposed w.
      Tensor xt = testing::uniform({K, 15}, 14, -1, 1, dt);
      Tensor wt = testing::uniform({K, n}, 15, -1, 1, dt);
      expect_close(kernels::linear(xt.to(gpu()).transpose(0, 1), wt.to(gpu()).transpose(0, 1), bg),
                   kernels::linear(xt.transpose(0, 1), wt.transpose(0, 1), b), tol,
                   "strided operands " + tag);
      // No rows, and a bias broadcast into an empty output.
      expect_close(kernels::linear(xg.narrow(0, 0, 0), wg, bg),
                   kernels::linear(x.narrow(0, 0, 0), w, b), tol, "no rows " + tag);
    }
  }
}

TEST(CudaLinear, BiasGeluEpilogue) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes) {
    for (int64_t n : {int64_t(29), int64_t(64)}) {
      Tensor x = testing::uniform({4, 7, K}, 21, -2, 2, dt);
      Tensor w = testing::uniform({n, K}, 22, -1, 1, dt);
      Tensor b = testing::uniform({n}, 23, -1, 1, dt);
      const Tensor xg = x.to(gpu()), wg = w.to(gpu()), bg = b.to(gpu());
      // The GEMM part as gemm_tol (K + 1 terms, inputs up to 2: twice the
      // absolute error); GELU's slope is at most 1.13. cuBLASLt evaluates
      // tanh its own way, with no documented accuracy: 1e-4 relative more.
      Tol tol = gemm_tol(dt, 2 * (K + 1));
      tol.rtol = std::max(tol.rtol, 1e-4);
      tol.atol = 1.13 * tol.atol + 1e-6;
      const std::string tag = std::string(dtype_name(dt)) + " N " + std::to_string(n);
      poison_device_memory();
      Tensor pre, pre_g;
      Tensor y = kernels::linear_bias_gelu(x, w, b, &pre);
      Tensor yg = kernels::linear_bias_gelu(xg, wg, bg, &pre_g);
      expect_close(yg, y, tol, "gelu " + tag);
      expect_close(pre_g, pre, gemm_tol(dt, 2 * (K + 1)), "pre-activation " + tag);
      expect_close(kernels::linear_bias_gelu(xg, wg, bg), y, tol, "gelu without aux " + tag);
    }
  }
  EXPECT_KEEL_ERROR(kernels::linear_bias_gelu(zeros({2, 3}, DType::F32, gpu()),
                                              zeros({4, 3}, DType::F32, gpu()), Tensor()),
                    "needs a bias");
}

// Gradients through autograd on both devices: loss = sum(y * r) with fixed
// random r, so every output element's gradient differs.
void check_backward(const std::string& what, DType dt, const std::vector<Shape>& shapes,
                    const std::function<Tensor(const std::vector<Tensor>&)>& f, int64_t terms) {
  std::vector<Tensor> cpu, gpu_in;
  uint64_t seed = 77;
  for (const Shape& s : shapes) {
    cuda_test::LeafPair p = cuda_test::leaf_pair(s, ++seed, -1.0, 1.0, dt);
    cpu.push_back(p.cpu);
    gpu_in.push_back(p.gpu);
  }
  Tensor y = f(cpu), yg = f(gpu_in);
  Tensor r = testing::uniform(y.sizes(), 5, 0.5, 1.5, dt);
  poison_device_memory();
  sum(mul(y, r)).backward();
  sum(mul(yg, r.to(gpu()))).backward();
  // Each gradient element sums up to `terms` products of O(1) values.
  const Tol tol = gemm_tol(dt, terms);
  expect_close(yg, y, tol, what + " forward " + dtype_name(dt));
  for (size_t i = 0; i < cpu.size(); ++i)
    expect_close(gpu_in[i].grad(), cpu[i].grad(), tol,
                 what + " grad " + std::to_string(i) + " " + dtype_name(dt));
}

TEST(CudaBackward, MatmulAndLinear) {
  KEEL_SKIP_WITHOUT_CUDA();
  auto mm = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  for (DType dt : kFloatTypes) {
    // x @ W: dW sums over the flattened batch rows in one GEMM.
    check_backward("x @ W", dt, {{2, 3, M, K}, {K, N}}, mm, 6 * M);
    check_backward("batched", dt, {{4, M, K}, {4, K, N}}, mm, std::max(M, N));
    // Broadcast batch on both sides: gradients summed back to each shape.
    check_backward("broadcast", dt, {{2, 1, M, K}, {3, K, N}}, mm, 3 * N);
    check_backward("vector", dt, {{K}, {K, N}}, mm, N);
    check_backward(
        "linear", dt, {{3, 5, K}, {N, K}, {N}},
        [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, N);
    check_backward(
        "linear, no bias", dt, {{6, K}, {N, K}},
        [](const std::vector<Tensor>& in) { return linear(in[0], in[1]); },
        std::max<int64_t>(K, N));
  }
}

}  // namespace
}  // namespace keel
