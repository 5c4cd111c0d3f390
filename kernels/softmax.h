// Softmax and log-softmax along any dim, and their backward passes. Rows are
// made numerically stable by subtracting the row max; sums are in f32 and
// bf16/f16 are loaded as f32 and rounded on store. Outputs are contiguous.
// A non-contiguous input is copied to a contiguous one first (one copy); a
// contiguous input with a non-last dim is read in place as (outer, n, inner).
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

// y = exp(x - max) / sum(exp(x - max)) along `dim`.
Tensor softmax(const Tensor& x, int64_t dim);
// y = x - max - log(sum(exp(x - max))) along `dim`.
Tensor log_softmax(const Tensor& x, int64_t dim);

// dx = y * (dy - sum(dy * y)), from the softmax output y.
Tensor softmax_backward(const Tensor& y, const Tensor& dy, int64_t dim);
// dx = dy - exp(y) * sum(dy), from the log-softmax output y.
Tensor log_softmax_backward(const Tensor& y, const Tensor& dy, int64_t dim);

}  // namespace keel::kernels
