// CUDA against CPU: LayerNorm and RMSNorm (warp rows and block rows,
// forward with saved statistics, backward dx and the deterministic
// parameter-gradient sums), fused cross-entropy (short and long rows, i32
// and i64 targets, ignore_index, label smoothing, a bad target reported as
// keel::Error, every row ignored), and all of them through autograd.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/cross_entropy.h"
#include "kernels/layernorm.h"
#include "kernels/rmsnorm.h"
#include "tests/cuda/parity.h"

namespace keel {
namespace {

using cuda_test::expect_close;
using cuda_test::expect_equal;
using cuda_test::poison_device_memory;
using cuda_test::to_gpu;
using cuda_test::Tol;
using cuda_test::tol_for;
using cuda_test::tol_for_sums;

struct NormCase {
  Shape shape;
  const char* why;
};

const NormCase kNormCases[] = {
    {{7, 64}, "C = 64: a warp per row"},
    {{3, 4, 96}, "leading dims, C = 96"},
    {{5, 1500}, "C = 1500: a 512-thread block per row"},
    {{130, 40}, "130 rows: several parameter-gradient slices"},
    {{2, 33}, "C = 33: rows not 16-byte aligned"},
};

// Parameter gradients are f32 sums over rows of O(1) terms of both signs:
// f32 partials in different orders, so an absolute floor of 1e-5 per ~100
// rows on top of the relative 1e-5.
Tol param_tol(int64_t rows) {
  return tol_for_sums(DType::F32, 1e-5 * std::max<double>(1.0, rows / 100.0));
}

TEST(CudaLayerNorm, ForwardAndBackwardMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 1000;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (const NormCase& nc : kNormCases) {
      const int64_t C = nc.shape.back(), rows = shape_numel(nc.shape) / C;
      const std::string what = std::string(nc.why) + " " + dtype_name(dt);
      // A mean far from 0 checks the two-pass variance.
      Tensor x = testing::uniform(nc.shape, ++seed, 2.0, 4.0, dt);
      Tensor w = testing::uniform({C}, ++seed, 0.5, 1.5);
      Tensor b = testing::uniform({C}, ++seed, -0.5, 0.5);
      Tensor xg = to_gpu(x), wg = to_gpu(w), bg = to_gpu(b);
      for (bool with_bias : {true, false}) {
        poison_device_memory();
        auto out = kernels::layernorm(x, w, with_bias ? b : Tensor(), 1e-5);
        auto outg = kernels::layernorm(xg, wg, with_bias ? bg : Tensor(), 1e-5);
        expect_close(outg.y, out.y, tol_for(dt), "layernorm y " + what);
        expect_close(outg.mean, out.mean, tol_for(DType::F32), "layernorm mean " + what);
        expect_close(outg.rstd, out.rstd, tol_for(DType::F32), "layernorm rstd " + what);

        // Backward from the CPU's statistics on both sides.
        Tensor dy = testing::uniform(nc.shape, ++seed, -1.0, 1.0, dt);
        poison_device_memory();
        auto g = kernels::layernorm_backward(dy, x, w, out.mean, out.rstd, with_bias, true, true);
        auto gg = kernels::layernorm_backward(to_gpu(dy), xg, wg, to_gpu(out.mean),
                                              to_gpu(out.rstd), with_bias, true, true);
        expect_close(gg.dx, g.dx, tol_for_sums(dt, 1e-5), "layernorm dx " + what);
        expect_close(gg.dweight, g.dweight, param_tol(rows), "layernorm dweight " + what);
        if (with_bias)
          expect_close(gg.dbias, g.dbias, param_tol(rows), "layernorm dbias " + what);
        else
          EXPECT_FALSE(gg.dbias.defined());

        // Only what is asked for.
        auto only_dx = kernels::layernorm_backward(to_gpu(dy), xg, wg, to_gpu(out.mean),
                                                   to_gpu(out.rstd), with_bias, true, false);
        expect_close(only_dx.dx, g.dx, tol_for_sums(dt, 1e-5), "layernorm dx alone " + what);
        EXPECT_FALSE(only_dx.dweight.defined());
        auto only_dw = kernels::layernorm_backward(to_gpu(dy), xg, wg, to_gpu(out.mean),
                                                   to_gpu(out.rstd), with_bias, false, true);
        EXPECT_FALSE(only_dw.dx.defined());
        expect_close(only_dw.dweight, g.dweight, param_tol(rows),
                     "layernorm dweight alone " + what);
      }
    }
  }
}

TEST(CudaLayerNorm, ParameterGradientsAreTheSameOnEveryRun) {
  KEEL_SKIP_WITHOUT_CUDA();
  Tensor x = to_gpu(testing::uniform({1000, 96}, 1100));
  Tensor w = to_gpu(testing::uniform({96}, 1101, 0.5, 1.5));
  Tensor dy = to_gpu(testing::uniform({1000, 96}, 1102));
  auto out = kernels::layernorm(x, w, Tensor(), 1e-5);
  auto a = kernels::layernorm_backward(dy, x, w, out.mean, out.rstd, true, false, true);
  auto b = kernels::layernorm_backward(dy, x, w, out.mean, out.rstd, true, false, true);
  expect_equal(b.dweight, a.dweight, "dweight, run twice");
  expect_equal(b.dbias, a.dbias, "dbias, run twice");
}

TEST(CudaRmsNorm, ForwardAndBackwardMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 1200;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (const NormCase& nc : kNormCases) {
      const int64_t C = nc.shape.back(), rows = shape_numel(nc.shape) / C;
      const std::string what = std::string(nc.why) + " " + dtype_name(dt);
      Tensor x = testing::uniform(nc.shape, ++seed, -2.0, 2.0, dt);
      Tensor w = testing::uniform({C}, ++seed, 0.5, 1.5);
      Tensor xg = to_gpu(x), wg = to_gpu(w);
      poison_device_memory();
      auto out = kernels::rmsnorm(x, w, 1e-6);
      auto outg = kernels::rmsnorm(xg, wg, 1e-6);
      expect_close(outg.y, out.y, tol_for(dt), "rmsnorm y " + what);
      expect_close(outg.rstd, out.rstd, tol_for(DType::F32), "rmsnorm rstd " + what);

      Tensor dy = testing::uniform(nc.shape, ++seed, -1.0, 1.0, dt);
      poison_device_memory();
      auto g = kernels::rmsnorm_backward(dy, x, w, out.rstd, true, true);
      auto gg = kernels::rmsnorm_backward(to_gpu(dy), xg, wg, to_gpu(out.rstd), true, true);
      expect_close(gg.dx, g.dx, tol_for_sums(dt, 1e-5), "rmsnorm dx " + what);
      expect_close(gg.dweight, g.dweight, param_tol(rows), "rmsnorm dweight " + what);
    }
  }
}

struct CeCase {
  int64_t N, V;
  DType targets;
  double smoothing;
  const char* why;
};

const CeCase kCeCases[] = {
    {13, 50, DType::I64, 0.0, "V = 50: a warp per row"},
    {13, 50, DType::I32, 0.1, "V = 50, i32 targets, smoothing 0.1"},
    {6, 3000, DType::I64, 0.0, "V = 3000: a block per row"},
    {6, 3001, DType::I32, 0.2, "V = 3001 (rows not aligned), smoothing 0.2"},
};

// Targets in [0, V), with rows 1 and 4 (when present) set to ignore_index.
Tensor make_targets(int64_t N, int64_t V, DType dt, int64_t ignore_index, uint64_t seed) {
  std::vector<int64_t> t(static_cast<size_t>(N));
  for (int64_t r = 0; r < N; ++r) t[size_t(r)] = int64_t(seed * 7919 + uint64_t(r) * 104729) % V;
  if (N > 1) t[1] = ignore_index;
  if (N > 4) t[4] = ignore_index;
  return from_vector<int64_t>(t, {N}).to(dt);
}

TEST(CudaCrossEntropy, ForwardAndBackwardMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 1300;
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const CeCase& cc : kCeCases) {
      const std::string what = std::string(cc.why) + " " + dtype_name(dt);
      Tensor logits = testing::uniform({cc.N, cc.V}, ++seed, -6.0, 6.0, dt);
      Tensor targets = make_targets(cc.N, cc.V, cc.targets, -100, seed);
      Tensor lg = to_gpu(logits), tg = to_gpu(targets);
      poison_device_memory();
      auto out = kernels::cross_entropy(logits, targets, -100, cc.smoothing);
      auto outg = kernels::cross_entropy(lg, tg, -100, cc.smoothing);
      EXPECT_EQ(outg.n_valid, out.n_valid) << what;
      // The loss is a mean of f64 row losses built from f32 row statistics.
      expect_close(outg.loss, out.loss, Tol{1e-5, 1e-6}, "loss " + what);
      expect_close(outg.lse, out.lse, tol_for(DType::F32), "lse " + what);

      Tensor dloss = full({}, 1.3, DType::F32);
      poison_device_memory();
      Tensor d = kernels::cross_entropy_backward(dloss, logits, targets, out.lse, out.n_valid, -100,
                                                 cc.smoothing);
      Tensor dg = kernels::cross_entropy_backward(to_gpu(dloss), lg, tg, to_gpu(out.lse),
                                                  out.n_valid, -100, cc.smoothing);
      expect_close(dg, d, tol_for(dt), "dlogits " + what);
    }
  }
  // Leading dims: logits (2, 3, V), targets (2, 3).
  Tensor logits = testing::uniform({2, 3, 70}, 1390, -3.0, 3.0);
  Tensor targets = make_targets(6, 70, DType::I64, -100, 1391).reshape({2, 3});
  auto out = kernels::cross_entropy(logits, targets, -100, 0.0);
  auto outg = kernels::cross_entropy(to_gpu(logits), to_gpu(targets), -100, 0.0);
  expect_close(outg.loss, out.loss, Tol{1e-5, 1e-6}, "loss with leading dims");
  expect_close(outg.lse, out.lse, tol_for(DType::F32), "lse with leading dims");
}

TEST(CudaCrossEntropy, BadTargetIsAnErrorNamingTheRow) {
  KEEL_SKIP_WITHOUT_CUDA();
  Tensor logits = to_gpu(testing::uniform({5, 10}, 1400));
  Tensor high = to_gpu(from_vector<int64_t>({1, 2, 3, 10, 0}, {5}));
  EXPECT_KEEL_ERROR(kernels::cross_entropy(logits, high, -100, 0.0), "target 10", "row 3",
                    "V = 10");
  // The first bad row is reported, whatever order the device checked them in.
  Tensor neg = to_gpu(from_vector<int32_t>({1, -1, 3, -5, 0}, {5}));
  EXPECT_KEEL_ERROR(kernels::cross_entropy(logits, neg, -100, 0.0), "target -1", "row 1");
  // ignore_index is not a bad target.
  Tensor ignored = to_gpu(from_vector<int64_t>({1, -100, 3, 4, 0}, {5}));
  EXPECT_EQ(kernels::cross_entropy(logits, ignored, -100, 0.0).n_valid, 4);
}

TEST(CudaCrossEntropy, EveryRowIgnoredGivesZeroLossAndGradient) {
  KEEL_SKIP_WITHOUT_CUDA();
  Tensor logits = to_gpu(testing::uniform({3, 8}, 1410));
  Tensor targets = to_gpu(from_vector<int64_t>({-100, -100, -100}, {3}));
  poison_device_memory();
  auto out = kernels::cross_entropy(logits, targets, -100, 0.1);
  EXPECT_EQ(out.n_valid, 0);
  EXPECT_EQ(out.loss.item(), 0.0);
  Tensor d = kernels::cross_entropy_backward(to_gpu(full({}, 1.0)), logits, targets, out.lse, 0,
                                             -100, 0.1);
  expect_equal(d, zeros({3, 8}), "gradient with every row ignored");
}

TEST(CudaAutograd, NormsAndCrossEntropyGradientsMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  auto [x, xg] = cuda_test::leaf_pair({4, 6, 32}, 1500, -2.0, 2.0);
  auto [w1, w1g] = cuda_test::leaf_pair({32}, 1501, 0.5, 1.5);
  auto [b1, b1g] = cuda_test::leaf_pair({32}, 1502, -0.5, 0.5);
  auto [w2, w2g] = cuda_test::leaf_pair({32}, 1503, 0.5, 1.5);
  Tensor targets = make_targets(24, 32, DType::I64, -100, 1504).reshape({4, 6});
  Tensor targets_g = to_gpu(targets);
  auto run = [](const Tensor& in, const Tensor& wa, const Tensor& ba, const Tensor& wb,
                const Tensor& t) {
    Tensor h = layernorm(in, wa, ba, 1e-5);  // (4, 6, 32)
    h = rmsnorm(gelu(h) + in, wb, 1e-6);     // (4, 6, 32)
    return cross_entropy(h * 3.0, t, -100, 0.1);
  };
  Tensor loss = run(x, w1, b1, w2, targets), loss_g = run(xg, w1g, b1g, w2g, targets_g);
  expect_close(loss_g, loss, Tol{1e-5, 1e-6}, "loss");
  loss.backward();
  loss_g.backward();
  expect_close(xg.grad(), x.grad(), Tol{1e-5, 1e-6}, "grad of x");
  expect_close(w1g.grad(), w1.grad(), param_tol(24), "grad of layernorm weight");
  expect_close(b1g.grad(), b1.grad(), param_tol(24), "grad of layernorm bias");
  expect_close(w2g.grad(), w2.grad(), param_tol(24), "grad of rmsnorm weight");
}

}  // namespace
}  // namespace keel
