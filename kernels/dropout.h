// Dropout with a counter-based mask: element i (row-major index) is kept iff
// philox_uniform_at(seed, offset, i) > p, and kept values are scaled by
// 1/(1-p). The mask is a pure function of (seed, offset, i), so the backward
// regenerates it instead of storing it, and it is the same on any thread
// count or device. x may be strided; bf16/f16 compute in f32.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace keel::kernels {

// y = x * keep / (1 - p), for p in [0, 1). A dropped element is x * 0, so
// NaN and inf still propagate (as in PyTorch). `base` is the index of x's
// element 0 in the stream: a data-parallel rank holding rows [r*n, (r+1)*n)
// of the serial batch passes base = r * numel, and draws the serial mask.
Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, uint64_t base = 0);

// dx = dy * keep / (1 - p), the same mask as the forward with these
// (seed, offset, base).
Tensor dropout_backward(const Tensor& dy, double p, uint64_t seed, uint64_t offset,
                        uint64_t base = 0);

}  // namespace keel::kernels
