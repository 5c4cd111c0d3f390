// N strided operands over one shape, with the dims that are contiguous
// across every operand merged: the shared first step of the CPU's strided
// loops (core/strided.h) and of batched GEMM layouts on either device.
// Host-only and free of OpenMP, so .cu files can include it.
#pragma once

#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace keel {

template <int N>
struct StridedLayout {
  Shape sizes;
  std::array<Shape, N> strides;
};

template <int N>
StridedLayout<N> collapse_dims(const Shape& sizes, const std::array<Shape, N>& strides) {
  StridedLayout<N> out;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;  // size-1 dims carry no stride information
    bool merge = !out.sizes.empty();
    for (int k = 0; k < N && merge; ++k)
      merge = out.strides[k].back() == strides[k][d] * sizes[d];
    if (merge) {
      out.sizes.back() *= sizes[d];
      for (int k = 0; k < N; ++k) out.strides[k].back() = strides[k][d];
    } else {
      out.sizes.push_back(sizes[d]);
      for (int k = 0; k < N; ++k) out.strides[k].push_back(strides[k][d]);
    }
  }
  if (out.sizes.empty()) {
    out.sizes.push_back(1);
    for (int k = 0; k < N; ++k) out.strides[k].push_back(1);
  }
  return out;
}

}  // namespace keel
