// CUDA softmax and log-softmax over contiguous (outer, n, inner) data, and
// their backward passes.
//   - Softmax dim last (inner == 1): one warp per row for n <= 1024 (8 rows
//     per block), else one block per row. The forward reads the row once for
//     an online max and sum (the sum is rescaled whenever the max grows),
//     merges the per-thread (max, sum) pairs by warp shuffles and shared
//     memory, and reads it again to write. 16-byte loads when rows align.
//   - Softmax dim not last (inner > 1): one thread per (outer, inner) column,
//     walking n with stride `inner`; neighbouring threads read neighbouring
//     columns, so every access is coalesced and no transposed copy is made.
// NaN follows the CPU path: the max skips it, the sum does not, so a NaN
// spreads to its whole row.
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;

// kRowThreads threads per row; rows of one block are consecutive.
template <typename T, bool Log, int kRowThreads>
__global__ void __launch_bounds__(kRowThreads == 32 ? kThreads : kRowThreads)
    softmax_rows(const T* x, T* y, int64_t rows, int64_t n) {
  constexpr int kBlock = kRowThreads == 32 ? kThreads : kRowThreads;
  constexpr int kRows = kBlock / kRowThreads;
  __shared__ MaxSum smem[kRowThreads / 32];
  const int tid = int(threadIdx.x) % kRowThreads;
  for (int64_t rb = int64_t(blockIdx.x) * kRows; rb < rows; rb += int64_t(gridDim.x) * kRows) {
    const int64_t r = rb + threadIdx.x / kRowThreads;
    const bool live = r < rows;
    const T* xr = x + (live ? r : 0) * n;
    MaxSum st{-INFINITY, 0.0f};
    if (live) for_row(xr, n, tid, kRowThreads, [&](int64_t, float v) { online_add(st, v); });
    st = row_allreduce<kRowThreads>(st, MergeMaxSum{}, smem);
    if (!live) continue;
    T* yr = y + r * n;
    const float m = st.m;
    if constexpr (Log) {
      // (x - m) - log(s), not x - (m + log(s)): x - m is exact near the max.
      const float log_s = logf(st.s);
      map_row(xr, yr, n, tid, kRowThreads, [=](int64_t, float v) { return (v - m) - log_s; });
    } else {
      const float inv = 1.0f / st.s;
      map_row(xr, yr, n, tid, kRowThreads, [=](int64_t, float v) { return expf(v - m) * inv; });
    }
  }
}

// One thread per (outer, inner) column of n elements at stride `inner`.
template <typename T, bool Log>
__global__ void __launch_bounds__(kThreads)
    softmax_cols(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  const int64_t cols = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += step) {
    const int64_t o = c / inner, i = c % inner;
    const T* xc = x + o * n * inner + i;
    T* yc = y + o * n * inner + i;
    MaxSum st{-INFINITY, 0.0f};
    for (int64_t j = 0; j < n; ++j) online_add(st, to_f32(xc[j * inner]));
    const float m = st.m;
    const float t = Log ? logf(st.s) : 1.0f / st.s;
    for (int64_t j = 0; j < n; ++j) {
      const float d = to_f32(xc[j * inner]) - m;
      yc[j * inner] = from_f32<T>(Log ? d - t : expf(d) * t);
    }
  }
}

// softmax:     dx = y * (dy - sum(dy * y))
// log_softmax: dx = dy - exp(y) * sum(dy)
template <typename T, bool Log, int kRowThreads>
__global__ void __launch_bounds__(kRowThreads == 32 ? kThreads : kRowThreads)
    softmax_backward_rows(const T* y, const T* dy, T* dx, int64_t rows, int64_t n) {
  constexpr int kBlock = kRowThreads == 32 ? kThreads : kRowThreads;
  constexpr int kRows = kBlock / kRowThreads;
  __shared__ float smem[kRowThreads / 32];
  const int tid = int(threadIdx.x) % kRowThreads;
  for (int64_t rb = int64_t(blockIdx.x) * kRows; rb < rows; rb += int64_t(gridDim.x) * kRows) {
    const int64_t r = rb + threadIdx.x / kRowThreads;
    const bool live = r < rows;
    const int64_t base = (live ? r : 0) * n;
    float acc = 0.0f;
    if (live)
      for_row2(y + base, dy + base, n, tid, kRowThreads,
               [&](int64_t, float yv, float g) { acc += Log ? g : g * yv; });
    acc = row_allreduce<kRowThreads>(acc, SumOp{}, smem);
    if (!live) continue;
    map_row2(y + base, dy + base, dx + base, n, tid, kRowThreads,
             [=](int64_t, float yv, float g) { return Log ? g - expf(yv) * acc : yv * (g - acc); });
  }
}

template <typename T, bool Log>
__global__ void __launch_bounds__(kThreads)
    softmax_backward_cols(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner) {
  const int64_t cols = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += step) {
    const int64_t base = (c / inner) * n * inner + c % inner;
    float acc = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t e = base + j * inner;
      acc += Log ? to_f32(dy[e]) : to_f32(dy[e]) * to_f32(y[e]);
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t e = base + j * inner;
      const float yv = to_f32(y[e]), g = to_f32(dy[e]);
      dx[e] = from_f32<T>(Log ? g - expf(yv) * acc : yv * (g - acc));
    }
  }
}

int64_t row_blocks(int64_t rows, int rows_per_block) {
  return std::min<int64_t>((rows + rows_per_block - 1) / rows_per_block, INT32_MAX);
}

template <typename T, bool Log>
void forward(const Tensor& x, Tensor& y, int64_t outer, int64_t n, int64_t inner) {
  const T* xp = data_ptr<const T>(x);
  T* yp = data_ptr<T>(y);
  cudaStream_t stream = stream_of(x);
  if (inner > 1) {
    softmax_cols<T, Log>
        <<<grid_for(outer * inner, kThreads, x.device().index), kThreads, 0, stream>>>(
            xp, yp, outer, n, inner);
  } else if (n <= 1024) {
    softmax_rows<T, Log, 32>
        <<<unsigned(row_blocks(outer, kThreads / 32)), kThreads, 0, stream>>>(xp, yp, outer, n);
  } else if (n <= 8192) {
    softmax_rows<T, Log, 256><<<unsigned(row_blocks(outer, 1)), 256, 0, stream>>>(xp, yp, outer, n);
  } else {
    softmax_rows<T, Log, 1024>
        <<<unsigned(row_blocks(outer, 1)), 1024, 0, stream>>>(xp, yp, outer, n);
  }
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <typename T, bool Log>
void backward(const Tensor& y, const Tensor& dy, Tensor& dx, int64_t outer, int64_t n,
              int64_t inner) {
  const T* yp = data_ptr<const T>(y);
  const T* gp = data_ptr<const T>(dy);
  T* dp = data_ptr<T>(dx);
  cudaStream_t stream = stream_of(y);
  if (inner > 1) {
    softmax_backward_cols<T, Log>
        <<<grid_for(outer * inner, kThreads, y.device().index), kThreads, 0, stream>>>(
            yp, gp, dp, outer, n, inner);
  } else if (n <= 1024) {
    softmax_backward_rows<T, Log, 32>
        <<<unsigned(row_blocks(outer, kThreads / 32)), kThreads, 0, stream>>>(yp, gp, dp, outer, n);
  } else if (n <= 8192) {
    softmax_backward_rows<T, Log, 256>
        <<<unsigned(row_blocks(outer, 1)), 256, 0, stream>>>(yp, gp, dp, outer, n);
  } else {
    softmax_backward_rows<T, Log, 1024>
        <<<unsigned(row_blocks(outer, 1)), 1024, 0, stream>>>(yp, gp, dp, outer, n);
  }
  KEEL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

// x, y contiguous (outer, n, inner); the softmax runs over n.
void softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, Tensor& y) {
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "softmax", {
    if (log)
      forward<T, true>(x, y, outer, n, inner);
    else
      forward<T, false>(x, y, outer, n, inner);
  });
}

void softmax_backward(const Tensor& y, const Tensor& dy, int64_t outer, int64_t n, int64_t inner,
                      bool log, Tensor& dx) {
  KEEL_CUDA_DISPATCH_FLOAT(y.dtype(), "softmax backward", {
    if (log)
      backward<T, true>(y, dy, dx, outer, n, inner);
    else
      backward<T, false>(y, dy, dx, outer, n, inner);
  });
}

}  // namespace keel::kernels::cuda
