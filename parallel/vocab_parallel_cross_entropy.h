// Megatron's vocab-parallel cross-entropy: the loss of logits whose class dim
// is sharded over a tensor-parallel group, without gathering the full logits.
// Rank r of `tp` holds columns [r*Vl, (r+1)*Vl) of the full (..., V) logits,
// V = Vl * tp.size(). The forward runs two all-reduces of O(rows) values (the
// row max, then one batched sum of exp-sums, target logits and, with label
// smoothing, logit sums); the backward is local. The loss equals the serial
// keel::cross_entropy on the full logits (autograd/ops.h): same label
// smoothing, mean over non-ignored rows, 0 loss and 0 gradient when every row
// is ignored; only the f32 summation order of the exp-sums differs.
#pragma once

#include "core/tensor.h"
#include "parallel/communicator.h"

namespace keel::parallel {

// logits: this rank's shard (..., Vl) (f32, bf16 or f16; math in f32).
// targets: the leading shape of logits, i32 or i64 global class ids in
// [0, V) or == ignore_index; identical on every rank of `tp`, as are the
// logits' shapes (checked: equal Vl across ranks). Returns the () f32 loss,
// the same on every rank. label_smoothing in [0, 1] as in the serial op.
// Host tensors go over an MPI communicator, device tensors over NCCL (a
// mismatch is a keel::Error); the local work is fused kernels on either.
// Every rank must call it and run its backward; the backward needs no
// communicator.
Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets, Communicator& tp,
                                    int64_t ignore_index = -100, double label_smoothing = 0.0);

}  // namespace keel::parallel
