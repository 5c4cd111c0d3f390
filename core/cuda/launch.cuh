// Launch helpers shared by core's data-movement kernels (core/cuda/copy.cu)
// and the op kernels (kernels/cuda/common.cuh): grid sizes for grid-stride
// loops, and strided layouts whose contiguous dims are merged before launch.
// For .cu files.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>

#include "core/cuda/check.h"
#include "core/tensor.h"

namespace keel::cuda {

// Streaming multiprocessors of `device`, asked once per device.
inline int sm_count(int device) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices] = {};
  KEEL_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " out of range");
  int n = cache[device].load(std::memory_order_relaxed);
  if (n == 0) {
    KEEL_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

// Blocks for a grid-stride loop over `work` items at `threads` per block:
// enough to fill every SM `per_sm` times, no more than the work needs.
inline unsigned grid_for(int64_t work, int threads, int device, int per_sm = 8) {
  const int64_t need = (work + threads - 1) / threads;
  const int64_t cap = int64_t(sm_count(device)) * per_sm;
  return unsigned(std::max<int64_t>(1, std::min(need, cap)));
}

// Calls f(W{}) with W the unsigned word of `bytes` bytes (1, 2, 4 or 8):
// kernels that move elements without converting them move words.
template <typename F>
void dispatch_bits(size_t bytes, F&& f) {
  switch (bytes) {
    case 1:
      f(uint8_t{});
      break;
    case 2:
      f(uint16_t{});
      break;
    case 4:
      f(uint32_t{});
      break;
    case 8:
      f(uint64_t{});
      break;
    default:
      KEEL_ASSERT(false, "element size ", bytes);
  }
}

inline constexpr int kMaxDims = 12;

// N operands iterated over one shape (sizes), each with its own element
// strides (0 on broadcast dims). Passed to kernels by value.
template <int N>
struct Layout {
  int ndim = 1;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};
};

// Drops size-1 dims and merges dims that are contiguous across every operand,
// so a dense tensor becomes one dim of stride 1.
template <int N>
Layout<N> make_layout(const Shape& sizes, const std::array<Shape, N>& strides) {
  Layout<N> L;
  int nd = 0;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    bool merge = nd > 0;
    for (int k = 0; k < N && merge; ++k) merge = L.strides[k][nd - 1] == strides[k][d] * sizes[d];
    if (merge) {
      L.sizes[nd - 1] *= sizes[d];
      for (int k = 0; k < N; ++k) L.strides[k][nd - 1] = strides[k][d];
    } else {
      KEEL_CHECK(nd < kMaxDims, "CUDA kernels take at most ", kMaxDims,
                 " non-mergeable dims; got shape ", shape_str(sizes));
      L.sizes[nd] = sizes[d];
      for (int k = 0; k < N; ++k) L.strides[k][nd] = strides[k][d];
      ++nd;
    }
  }
  if (nd == 0) {
    L.sizes[0] = 1;
    for (int k = 0; k < N; ++k) L.strides[k][0] = 1;
    nd = 1;
  }
  L.ndim = nd;
  return L;
}

// The element offsets of row-major position `linear` in each operand.
template <int N, typename Idx>
__device__ __forceinline__ void layout_offsets(const Layout<N>& L, Idx linear, int64_t (&off)[N]) {
  if (L.ndim == 1) {  // the common case after merging: no division
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = int64_t(linear) * L.strides[k][0];
    return;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] = 0;
  for (int d = L.ndim - 1; d >= 0; --d) {
    const Idx s = Idx(L.sizes[d]);
    const Idx i = linear % s;
    linear /= s;
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += int64_t(i) * L.strides[k][d];
  }
}

}  // namespace keel::cuda
