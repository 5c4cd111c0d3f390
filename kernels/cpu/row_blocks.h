// Deterministic parameter-gradient sums for row-wise kernels (layernorm,
// rmsnorm): rows are cut into blocks that depend only on the row count, each
// block sums into its own f32 partial row, and the partials are added in
// block order in f64. The result is the same for any thread count.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "core/strided.h"

namespace keel::kernels::cpu {

// Enough blocks to feed the threads, few enough that the (blocks, C)
// partials stay a few MB.
inline constexpr int64_t kMinBlockRows = 8;
inline constexpr int64_t kMaxBlocks = 128;
// Columns per work item when the partials are reduced.
inline constexpr int64_t kColChunk = 256;

struct RowBlocks {
  int64_t blocks = 1, per_block = 1;
  explicit RowBlocks(int64_t rows)
      : blocks(std::clamp<int64_t>((rows + kMinBlockRows - 1) / kMinBlockRows, 1, kMaxBlocks)),
        per_block((rows + blocks - 1) / blocks) {}
};

// out[c] = sum over blocks of partial[blk, c], in block order.
inline void reduce_partials(const float* partial, int64_t blocks, int64_t C, float* out) {
  const int64_t chunks = (C + kColChunk - 1) / kColChunk;
#pragma omp parallel for schedule(static) if (blocks * C >= kParallelGrain && chunks > 1)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t c0 = ch * kColChunk, n = std::min(kColChunk, C - c0);
    double acc[kColChunk];
    for (int64_t i = 0; i < n; ++i) acc[i] = 0.0;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const float* p = partial + blk * C + c0;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) acc[i] += double(p[i]);
    }
    for (int64_t i = 0; i < n; ++i) out[c0 + i] = float(acc[i]);
  }
}

// Calls body.template operator()<Dx, Params>() for the gradients wanted.
template <typename Body>
void dispatch_wanted(bool dx, bool params, Body&& body) {
  if (dx && params) body.template operator()<true, true>();
  else if (dx) body.template operator()<true, false>();
  else if (params) body.template operator()<false, true>();
}

}  // namespace keel::kernels::cpu
