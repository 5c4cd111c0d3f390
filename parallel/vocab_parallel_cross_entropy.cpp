// Vocab-parallel cross-entropy: the local parts are kernels
// (kernels/vocab_parallel_cross_entropy.h, CPU and CUDA); this file runs the
// collectives between them and records the backward. Per row, with M the
// global row max and every sum over the full vocabulary assembled from the
// shards:
//   se = sum_v exp(x_v - M),  sd = sum_v (x_v - M),  xt = x[target],
//   loss = log(se) + (1 - eps)(M - xt) - eps * sd / V,  lse = M + log(se),
// which is the serial kernel's formula, relative to the max so that large
// logits do not cancel. Collectives: one Max all-reduce of the N row maxes
// (plus two values that check the shard widths agree), one Sum all-reduce of
// [se | xt | sd] in one (k, N) buffer. xt is nonzero on exactly one rank, so
// its sum is exact. The backward is the serial cross-entropy backward on the
// shard (kernels::ClassShard), from the saved lse (N floats):
//   dx_v = (exp(x_v - lse) - eps/V - (1 - eps)[v == target]) * dloss / n_valid.
// On a device the count of valid rows and the width check each read a few
// values back (two stream synchronisations per forward).
#include "parallel/vocab_parallel_cross_entropy.h"

#include "autograd/autograd.h"
#include "kernels/cross_entropy.h"
#include "kernels/vocab_parallel_cross_entropy.h"

namespace keel::parallel {

namespace {

constexpr const char* kOp = "vocab_parallel_cross_entropy";

void check_inputs(const Tensor& logits, const Tensor& targets, const Communicator& tp,
                  double label_smoothing) {
  KEEL_CHECK(logits.defined(), kOp, ": logits are undefined");
  // The serial op's checks, then what this one adds.
  kernels::check_cross_entropy_inputs(kOp, logits, targets, label_smoothing,
                                      "vocabulary shard dim Vl");
  KEEL_CHECK(tp.device().is_cpu() == logits.device().is_cpu(), kOp, ": communicator '", tp.name(),
             "' moves ", tp.device().is_cpu() ? "host" : "device", " buffers, but the logits are ",
             logits.describe());
}

}  // namespace

Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets, Communicator& tp,
                                    int64_t ignore_index, double label_smoothing) {
  check_inputs(logits, targets, tp, label_smoothing);
  const int64_t Vl = logits.size(-1), N = logits.numel() / Vl, V = Vl * tp.size();
  const int64_t start = int64_t(tp.rank()) * Vl;
  // Detached: the saved copies must not hold the graph that produced them.
  Tensor lc = logits.detach().contiguous().view({N, Vl});  // (N, Vl)
  Tensor tc = targets.detach().contiguous().view({N});     // (N)
  const float eps = float(label_smoothing);
  // From the targets alone (identical on every rank), before any collective,
  // so a bad target fails on every rank and no rank is left waiting.
  const int64_t n_valid = kernels::vocab_ce_count_valid(kOp, tc, ignore_index, V);
  kernels::VocabCeOut out;
  if (n_valid == 0) {
    // Every rank sees the same targets, so every rank returns here together:
    // the loss is the constant 0 and no collective is needed.
    out.loss = zeros({}, DType::F32, logits.device());  // ()
  } else {
    kernels::VocabShardStats stats = kernels::vocab_ce_local(lc, tc, ignore_index, start, eps > 0);
    Tensor maxes = stats.maxes.clone();  // (N + 2), reduced in place
    tp.all_reduce_(maxes, ReduceOp::Max);
    // Vl and -Vl have equal maxima over the group only when every rank holds
    // the same shard width (f32 is exact for widths below 2^24).
    const Tensor w = maxes.narrow(0, N, 2).to(Device::cpu());  // (2)
    KEEL_CHECK(w.data<float>()[0] == -w.data<float>()[1], kOp, ": the ranks of communicator '",
               tp.name(), "' hold vocabulary shards of different widths (between ",
               -w.data<float>()[1], " and ", w.data<float>()[0], " columns; this rank ", Vl, ")");
    Tensor sums = kernels::vocab_ce_rescale(stats, maxes, Vl);  // (k, N)
    tp.all_reduce_(sums, ReduceOp::Sum);
    out = kernels::vocab_ce_finish(maxes, sums, tc, ignore_index, V, n_valid, eps);
  }
  if (!any_requires_grad({logits})) return out.loss;

  // Saved: the logits, the targets and lse (N floats); the backward is local,
  // so the communicator is not kept.
  Tensor lse = out.lse;
  const Shape shape = logits.sizes();
  const DType dtype = logits.dtype();
  const kernels::ClassShard shard{start, V};
  record(kOp, {logits}, {out.loss},
         [lc, tc, lse, n_valid, shard, ignore_index, eps, shape, dtype](BackwardCtx& c) {
           // With no valid row the loss is the constant 0, so its gradient is zero.
           if (n_valid == 0) return std::vector<Tensor>{zeros(shape, dtype, lc.device())};
           return std::vector<Tensor>{kernels::cross_entropy_backward(
                                          c.grad(), lc, tc, lse, n_valid, ignore_index, eps, shard)
                                          .view(shape)};
         });
  return out.loss;
}

}  // namespace keel::parallel
