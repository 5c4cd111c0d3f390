// Differentiable fused cross-entropy. The node saves the logits, the
// targets and the forward's per-row log-sum-exp (f32) — never the softmax —
// plus the count of non-ignored rows the mean divides by.
#include "autograd/ops.h"
#include "kernels/cross_entropy.h"

namespace keel {

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     double label_smoothing) {
  kernels::CrossEntropyOut out =
      kernels::cross_entropy(logits, targets, ignore_index, label_smoothing);
  if (!any_requires_grad({logits})) return out.loss;
  Tensor ls = logits.detach(), ts = targets.detach();
  Tensor lse = out.lse;  // (...) f32
  const int64_t n_valid = out.n_valid;
  // Only the logits take a gradient; the integer targets are saved state.
  record("cross_entropy", {logits}, {out.loss},
         [ls, ts, lse, n_valid, ignore_index, label_smoothing](BackwardCtx& c) {
           Tensor dlogits = kernels::cross_entropy_backward(c.grad(), ls, ts, lse, n_valid,
                                                            ignore_index, label_smoothing);
           return std::vector<Tensor>{dlogits};
         });
  return out.loss;
}

}  // namespace keel
