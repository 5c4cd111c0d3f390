// The local parts of the vocabulary-parallel cross-entropy
// (parallel/vocab_parallel_cross_entropy.h orchestrates them around its two
// all-reduces). A rank holds the logits' columns [start, start + Vl) of V.
// One pass over its shard gives, per row, the local max m, the sum of
// exp(x - m), the target's logit when this shard holds it, and (for label
// smoothing) the sum of x - m. After the max all-reduce (global M) the sums
// are moved to M: se * exp(m - M), sd + Vl (m - M); after the sum all-reduce
// the rows finish as the serial kernel's formula:
//   loss_r = log(se) + (1 - eps)(M - xt) - eps * sd / V,  lse_r = M + log(se).
// The backward is the serial one on the shard (kernels/cross_entropy.h,
// ClassShard). Math in f32; the mean over rows in f64, in row order.
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

struct VocabShardStats {
  Tensor maxes;  // (N + 2) f32: the local row maxes, then Vl and -Vl (for a width check)
  Tensor local;  // (k + 1, N) f32: m | se | xt | sd (k = 3 with smoothing, else 2)
};

// Rows not ignored whose target is in [0, V); a bad target is a keel::Error
// naming the row and value (`op` prefixes it). Synchronises a device stream.
int64_t vocab_ce_count_valid(const char* op, const Tensor& targets, int64_t ignore_index,
                             int64_t V);

// logits (N, Vl) and targets (N) contiguous, on one device. Ignored rows get
// max 0 and zero sums.
VocabShardStats vocab_ce_local(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                               int64_t start, bool smoothing);

// The sums (k, N) relative to the global row maxes: maxes after the Max
// all-reduce (only its first N entries are read).
Tensor vocab_ce_rescale(const VocabShardStats& stats, const Tensor& global_maxes, int64_t Vl);

struct VocabCeOut {
  Tensor loss;  // () f32
  Tensor lse;   // (N) f32, 0 on ignored rows
};

// From the reduced maxes and sums: the mean loss over the n_valid rows.
VocabCeOut vocab_ce_finish(const Tensor& global_maxes, const Tensor& sums, const Tensor& targets,
                           int64_t ignore_index, int64_t V, int64_t n_valid, float eps);

}  // namespace keel::kernels
