// Parallel iteration over N strided operands of one shape (broadcast operands
// have stride 0). Dimensions that are contiguous across every operand are
// merged first, so a contiguous tensor is one long row and the body's inner
// loop is a flat, vectorizable loop.
#pragma once

#include <omp.h>

#include <array>
#include <cstdint>

#include "core/layout.h"
#include "core/tensor.h"

namespace keel {

// Minimum elements per thread before going parallel.
inline constexpr int64_t kParallelGrain = 32768;

// body(std::array<int64_t, N> offsets, int64_t n, std::array<int64_t, N> inner_strides)
// is called on pieces of rows; pieces never overlap and cover every element.
template <int N, typename Body>
void strided_for_each(const Shape& sizes, const std::array<Shape, N>& strides, Body&& body) {
  const int64_t numel = shape_numel(sizes);
  if (numel == 0) return;
  StridedLayout<N> L = collapse_dims<N>(sizes, strides);
  const int nd = int(L.sizes.size());
  const int64_t inner = L.sizes[nd - 1];
  const int64_t rows = numel / inner;
  std::array<int64_t, N> inner_strides;
  for (int k = 0; k < N; ++k) inner_strides[k] = L.strides[k][nd - 1];
  const int threads = numel >= kParallelGrain ? omp_get_max_threads() : 1;
  int64_t chunk = inner;
  if (threads > 1 && rows < 4 * threads) {
    chunk = std::max<int64_t>(4096, (inner + 4 * threads - 1) / (4 * threads));
    chunk = (chunk + 15) / 16 * 16;
  }
  const int64_t per_row = (inner + chunk - 1) / chunk;
  const int64_t items = rows * per_row;
#pragma omp parallel for schedule(static) if (threads > 1)
  for (int64_t item = 0; item < items; ++item) {
    int64_t row = item / per_row, c = item % per_row;
    std::array<int64_t, N> off{};
    int64_t r = row;
    for (int d = nd - 2; d >= 0; --d) {
      int64_t i = r % L.sizes[d];
      r /= L.sizes[d];
      for (int k = 0; k < N; ++k) off[k] += i * L.strides[k][d];
    }
    int64_t start = c * chunk;
    for (int k = 0; k < N; ++k) off[k] += start * inner_strides[k];
    body(off, std::min(chunk, inner - start), inner_strides);
  }
}


}  // namespace keel
