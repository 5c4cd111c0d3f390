// CUDA against CPU: the local parts of the vocabulary-parallel loss
// (kernels/vocab_parallel_cross_entropy.h) on one rank's shard at a nonzero
// class offset, for warp rows (Vl <= 1024) and block rows, with and without
// label smoothing, ignored rows, i32 and i64 targets, bf16 logits, and a
// shard of masked (padding) classes only; then the shard backward
// (kernels::cross_entropy_backward with a ClassShard), the count's bad-target
// error, and the whole op through a device communicator of one rank.
#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "kernels/cross_entropy.h"
#include "kernels/vocab_parallel_cross_entropy.h"
#include "parallel/vocab_parallel_cross_entropy.h"
#include "tests/cuda/parity.h"

namespace keel {
namespace {

using cuda_test::expect_close;
using cuda_test::poison_device_memory;
using cuda_test::to_gpu;
using cuda_test::Tol;
using cuda_test::tol_for;

struct ShardCase {
  int64_t N, Vl, start, V;
  double eps;
  DType dtype, target_dtype;
  bool masked;  // every class of the shard is -inf (padding)
  const char* why;
};

const ShardCase kCases[] = {
    {9, 40, 80, 160, 0.0, DType::F32, DType::I64, false, "warp rows, third shard of four"},
    {9, 40, 80, 160, 0.1, DType::F32, DType::I32, false, "warp rows, smoothing, i32"},
    {5, 1500, 1500, 3000, 0.1, DType::F32, DType::I64, false, "block rows, smoothing"},
    {6, 300, 0, 600, 0.2, DType::BF16, DType::I64, false, "bf16 logits"},
    {7, 64, 64, 128, 0.0, DType::F32, DType::I64, true, "a shard of padding only"},
};

Tensor shard_targets(const ShardCase& c) {
  std::vector<int64_t> t(size_t(c.N));
  for (int64_t r = 0; r < c.N; ++r) {
    // Rows in this shard, in others, and ignored ones; never a masked class.
    t[size_t(r)] = r % 3 == 2 ? -100 : (c.masked ? r % c.start : (r * 37 + c.start - 5) % c.V);
  }
  return from_vector(t, {c.N}).to(c.target_dtype);
}

TEST(CudaVocabParallelCrossEntropy, LocalPartsAndBackwardMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 700;
  for (const ShardCase& c : kCases) {
    SCOPED_TRACE(c.why);
    Tensor x = testing::uniform({c.N, c.Vl}, ++seed, -5.0, 5.0, c.dtype);  // (N, Vl)
    if (c.masked) x.fill_(-std::numeric_limits<double>::infinity());
    const Tensor t = shard_targets(c);
    const Tensor xg = to_gpu(x), tg = to_gpu(t);
    const bool smoothing = c.eps > 0.0;

    EXPECT_EQ(kernels::vocab_ce_count_valid("test", tg, -100, c.V),
              kernels::vocab_ce_count_valid("test", t, -100, c.V));
    poison_device_memory();
    const kernels::VocabShardStats s = kernels::vocab_ce_local(x, t, -100, c.start, smoothing);
    const kernels::VocabShardStats sg = kernels::vocab_ce_local(xg, tg, -100, c.start, smoothing);
    expect_close(sg.maxes, s.maxes, tol_for(DType::F32), "row maxes");
    expect_close(sg.local, s.local, tol_for(DType::F32), "m | se | xt | sd");

    // Stand-in global maxes: the local ones raised by 0.5 (another rank's
    // larger logits), finite for the masked shard.
    Tensor M = s.maxes.clone();  // (N + 2)
    for (int64_t r = 0; r < c.N; ++r) {
      const float m = M.data<float>()[r];
      M.data<float>()[r] = std::isfinite(m) ? m + 0.5f : 1.0f;
    }
    const Tensor sums = kernels::vocab_ce_rescale(s, M, c.Vl);
    const Tensor sumsg = kernels::vocab_ce_rescale(sg, to_gpu(M), c.Vl);
    expect_close(sumsg, sums, tol_for(DType::F32), "rescaled sums");

    // The finish from the same (CPU) sums on both sides; the shard's sums
    // stand for the reduced ones.
    const int64_t n_valid = kernels::vocab_ce_count_valid("test", t, -100, c.V);
    const float eps = float(c.eps);
    if (!c.masked) {
      const kernels::VocabCeOut out = kernels::vocab_ce_finish(M, sums, t, -100, c.V, n_valid, eps);
      const kernels::VocabCeOut outg =
          kernels::vocab_ce_finish(to_gpu(M), to_gpu(sums), tg, -100, c.V, n_valid, eps);
      expect_close(outg.loss, out.loss, Tol{1e-5, 1e-6}, "loss");
      expect_close(outg.lse, out.lse, tol_for(DType::F32), "lse");
      // The shard backward from the CPU's lse on both sides.
      const Tensor dloss = full({}, 1.5, DType::F32);
      const kernels::ClassShard shard{c.start, c.V};
      poison_device_memory();
      const Tensor d = kernels::cross_entropy_backward(dloss, x, t, out.lse, n_valid, -100, c.eps,
                                                       shard);
      const Tensor dg = kernels::cross_entropy_backward(to_gpu(dloss), xg, tg, to_gpu(out.lse),
                                                        n_valid, -100, c.eps, shard);
      expect_close(dg, d, tol_for(c.dtype), "dlogits");
    }
  }
}

TEST(CudaVocabParallelCrossEntropy, BadTargetIsReportedLikeTheCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  const Tensor t = from_vector<int64_t>({1, -100, 200, 3}, {4});
  std::string cpu_msg, gpu_msg;
  try {
    kernels::vocab_ce_count_valid("op", t, -100, 128);
  } catch (const Error& e) {
    cpu_msg = e.what();
  }
  try {
    kernels::vocab_ce_count_valid("op", to_gpu(t), -100, 128);
  } catch (const Error& e) {
    gpu_msg = e.what();
  }
  EXPECT_NE(cpu_msg.find("target 200 at row 2"), std::string::npos) << cpu_msg;
  EXPECT_EQ(gpu_msg, cpu_msg);
}

// tp = 1 on the device: the op is the serial loss, forward and backward.
TEST(CudaVocabParallelCrossEntropy, OneDeviceRankIsTheSerialLoss) {
  KEEL_SKIP_WITHOUT_CUDA();
  auto tp = parallel::local_world(cuda_test::gpu());
  const Tensor x = testing::uniform({2, 5, 300}, 77, -3.0, 3.0);  // (B, T, V)
  const Tensor t = from_vector<int64_t>({0, 5, -100, 299, 7, 8, 100, 200, -100, 1}, {2, 5});
  Tensor xs = to_gpu(x), xp = to_gpu(x);
  xs.set_requires_grad();
  xp.set_requires_grad();
  Tensor serial = cross_entropy(xs, to_gpu(t), -100, 0.1);
  Tensor loss = parallel::vocab_parallel_cross_entropy(xp, to_gpu(t), *tp, -100, 0.1);
  serial.backward();
  loss.backward();
  expect_close(loss, serial, Tol{1e-5, 1e-6}, "loss");
  expect_close(xp.grad(), xs.grad(), tol_for(DType::F32), "dlogits");
}

}  // namespace
}  // namespace keel
