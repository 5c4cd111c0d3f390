// Fused cross-entropy over the last dim of logits (..., V), with targets of
// the leading shape (i32 or i64). Rows whose target equals ignore_index
// contribute nothing. With label smoothing eps the per-row loss is
//   (1 - eps) * -log p[target] + eps * mean_v(-log p[v])
//   = lse - (1 - eps) * x[target] - eps * mean_v(x[v]),
// and the result is the mean over non-ignored rows (a 0-dim f32 tensor).
// When every row is ignored the loss is 0 and the gradient is all zeros
// (PyTorch returns NaN there; a padded-out batch should not poison training).
// The forward finds each row's max and log-sum-exp in two passes and keeps
// only lse (f32, one per row); the softmax is never materialised. The
// backward rebuilds softmax from lse in one pass per row. Math is in f32.
// A non-contiguous logits or targets tensor is copied to a contiguous one.
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

struct CrossEntropyOut {
  Tensor loss;          // () f32
  Tensor lse;           // logits' leading dims, f32: logsumexp of each row
  int64_t n_valid = 0;  // rows whose target is not ignore_index
};

// The argument checks of cross_entropy, for the ops that compute it another
// way (the vocabulary-parallel loss): floating logits (..., V) with a
// non-empty last dim (named `class_dim` in the message), i32/i64 targets of
// the leading shape on the logits' device, label_smoothing in [0, 1].
void check_cross_entropy_inputs(const char* op, const Tensor& logits, const Tensor& targets,
                                double label_smoothing, const char* class_dim = "class dim V");

// A target outside [0, V) that is not ignore_index is a keel::Error naming
// the row, the value and V.
CrossEntropyOut cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                              double label_smoothing);

// Where the logits' V columns sit in the classes: [start, start + V) of
// `total` (0: V itself). The vocabulary-parallel loss passes its shard's.
struct ClassShard {
  int64_t start = 0;
  int64_t total = 0;
};

// dlogits = (softmax - smoothed one-hot) * dloss / n_valid on valid rows, 0
// on ignored rows; dloss is the 0-dim gradient of the loss. For a shard of
// the classes, lse is the full rows' log-sum-exp, the smoothing mass is
// spread over all `total` classes, and a target outside the shard's columns
// adds no one-hot term.
Tensor cross_entropy_backward(const Tensor& dloss, const Tensor& logits, const Tensor& targets,
                              const Tensor& lse, int64_t n_valid, int64_t ignore_index,
                              double label_smoothing, const ClassShard& shard = {});

}  // namespace keel::kernels
