// Dropout with a counter-based mask addressed by logical coordinates. A
// tensor x may be one block of a larger logical tensor (a shard along batch,
// sequence, heads or channels); a DropoutBox says where: the logical shape
// and x's start in every dim (x's own shape is the count). x's element at
// coordinates c is logical element s = Σ_d (start_d + c_d) · logical_stride_d
// (row-major), and is kept iff philox_uniform_at(seed, offset, s) > p; kept
// values are scaled by 1/(1-p). So every shard of any layout draws exactly
// its part of the unsharded tensor's mask. The mask is a pure function of
// (seed, offset, s): the backward regenerates it instead of storing it, and
// it is the same on any thread count or device. x may be strided; bf16/f16
// compute in f32.
#pragma once

#include <cstdint>
#include <vector>

#include "core/hd.h"
#include "core/tensor.h"

namespace keel::kernels {

// Where x sits in the logical tensor. Empty (both fields) means x is the
// whole logical tensor. Otherwise both have x's rank (at most
// kDropoutMaxDims) and start_d + x.size(d) <= logical_d in every dim.
struct DropoutBox {
  Shape logical;               // the full tensor's shape
  std::vector<int64_t> start;  // x's element 0, in logical coordinates
};

inline constexpr int kDropoutMaxDims = 8;

// y = x * keep / (1 - p), for p in [0, 1). A dropped element is x * 0, so
// NaN and inf still propagate (as in PyTorch). A bad box is a keel::Error.
Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset,
               const DropoutBox& box = {});

// dx = dy * keep / (1 - p), the same mask as the forward with these
// (seed, offset, box).
Tensor dropout_backward(const Tensor& dy, double p, uint64_t seed, uint64_t offset,
                        const DropoutBox& box = {});

// ---- for the CPU and CUDA paths (built by the launcher from a checked box) ----

// x in row-major order is `rows` runs of `run` elements whose logical indices
// are consecutive: the trailing dims that x holds whole, plus the first one
// it does not, are contiguous in the logical tensor. Run r's element j is
// logical element row_base(r) + j. Passed to CUDA kernels by value.
struct DropoutRuns {
  int64_t run = 0;    // elements per run
  int64_t rows = 0;   // runs; rows * run = numel(x)
  uint64_t base = 0;  // Σ_d start_d · logical_stride_d
  int outer = 0;      // x's leading dims that index the runs (size-1 dims dropped)
  int64_t sizes[kDropoutMaxDims] = {};     // their local sizes
  uint64_t strides[kDropoutMaxDims] = {};  // their logical strides

  KEEL_HD uint64_t row_base(int64_t r) const {
    uint64_t b = base;
    for (int d = outer - 1; d >= 0; --d) {
      b += uint64_t(r % sizes[d]) * strides[d];
      r /= sizes[d];
    }
    return b;
  }
};

}  // namespace keel::kernels
