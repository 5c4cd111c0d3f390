// Launchers of the vocabulary-parallel loss's local parts: check, allocate,
// dispatch by device. The op that calls them has checked its inputs.
#include "kernels/vocab_parallel_cross_entropy.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
int64_t vocab_ce_count_valid(const char* op, const Tensor& targets, int64_t ignore_index,
                             int64_t V);
void vocab_ce_local(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                    int64_t start, VocabShardStats& out);
void vocab_ce_rescale(const Tensor& local, const Tensor& global_maxes, int64_t Vl, Tensor& sums);
void vocab_ce_finish(const Tensor& global_maxes, const Tensor& sums, const Tensor& targets,
                     int64_t ignore_index, int64_t V, int64_t n_valid, float eps, VocabCeOut& out);
}  // namespace cpu

namespace cuda {
int64_t vocab_ce_count_valid(const char* op, const Tensor& targets, int64_t ignore_index,
                             int64_t V);
void vocab_ce_local(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                    int64_t start, VocabShardStats& out);
void vocab_ce_rescale(const Tensor& local, const Tensor& global_maxes, int64_t Vl, Tensor& sums);
void vocab_ce_finish(const Tensor& global_maxes, const Tensor& sums, const Tensor& targets,
                     int64_t ignore_index, int64_t V, int64_t n_valid, float eps, VocabCeOut& out);
}  // namespace cuda

namespace {

constexpr const char* kOp = "vocab_parallel_cross_entropy";

void check_rows(const Tensor& t, int64_t cols, const Tensor& targets, const char* what) {
  KEEL_CHECK(t.dtype() == DType::F32 && t.is_contiguous() && t.dim() == 2 &&
                 t.size(1) == targets.numel() && (cols < 0 || t.size(0) == cols),
             kOp, ": ", what, " must be contiguous f32 (k, N) for ", targets.numel(),
             " rows, got ", t.describe());
}

}  // namespace

int64_t vocab_ce_count_valid(const char* op, const Tensor& targets, int64_t ignore_index,
                             int64_t V) {
  KEEL_CHECK(targets.dim() == 1 && targets.is_contiguous(), kOp,
             ": targets must be contiguous (N), got ", targets.describe());
  int64_t n = 0;
  on_device(
      kOp, targets.device(), [&] { n = cpu::vocab_ce_count_valid(op, targets, ignore_index, V); },
      [&] { n = cuda::vocab_ce_count_valid(op, targets, ignore_index, V); });
  return n;
}

VocabShardStats vocab_ce_local(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                               int64_t start, bool smoothing) {
  KEEL_CHECK(logits.dim() == 2 && logits.is_contiguous() && targets.dim() == 1 &&
                 targets.is_contiguous() && targets.size(0) == logits.size(0),
             kOp, ": expected contiguous logits (N, Vl) and targets (N), got ", logits.describe(),
             " and ", targets.describe());
  check_devices(kOp, logits.device(), {&targets});
  const int64_t N = logits.size(0), k = smoothing ? 3 : 2;
  VocabShardStats out;
  out.maxes = empty({N + 2}, DType::F32, logits.device());      // (N + 2)
  out.local = zeros({k + 1, N}, DType::F32, logits.device());   // (k + 1, N): m | se | xt | sd
  on_device(
      kOp, logits.device(), [&] { cpu::vocab_ce_local(logits, targets, ignore_index, start, out); },
      [&] { cuda::vocab_ce_local(logits, targets, ignore_index, start, out); });
  return out;
}

Tensor vocab_ce_rescale(const VocabShardStats& stats, const Tensor& global_maxes, int64_t Vl) {
  const int64_t N = stats.local.size(1);
  KEEL_CHECK(global_maxes.dtype() == DType::F32 && global_maxes.numel() >= N, kOp,
             ": the row maxes must be f32 with ", N, " entries at least, got ",
             global_maxes.describe());
  check_devices(kOp, stats.local.device(), {&global_maxes});
  Tensor sums = empty({stats.local.size(0) - 1, N}, DType::F32, stats.local.device());  // (k, N)
  on_device(
      kOp, sums.device(), [&] { cpu::vocab_ce_rescale(stats.local, global_maxes, Vl, sums); },
      [&] { cuda::vocab_ce_rescale(stats.local, global_maxes, Vl, sums); });
  return sums;
}

VocabCeOut vocab_ce_finish(const Tensor& global_maxes, const Tensor& sums, const Tensor& targets,
                           int64_t ignore_index, int64_t V, int64_t n_valid, float eps) {
  check_rows(sums, eps > 0.0f ? 3 : 2, targets, "the reduced sums");
  check_devices(kOp, sums.device(), {&global_maxes, &targets});
  VocabCeOut out;
  out.loss = zeros({}, DType::F32, sums.device());                // ()
  out.lse = zeros({targets.numel()}, DType::F32, sums.device());  // (N)
  if (n_valid == 0) return out;
  on_device(
      kOp, sums.device(),
      [&] { cpu::vocab_ce_finish(global_maxes, sums, targets, ignore_index, V, n_valid, eps, out); },
      [&] {
        cuda::vocab_ce_finish(global_maxes, sums, targets, ignore_index, V, n_valid, eps, out);
      });
  return out;
}

}  // namespace keel::kernels
