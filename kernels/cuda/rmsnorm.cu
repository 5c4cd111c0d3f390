// CUDA RMSNorm over contiguous (R, C) rows.
// Forward: one warp per row for C <= 1024 (8 rows per block), else one
// block per row; two passes (mean square, write), 16-byte loads where rows
// align; rstd (f32) saved per row.
// Backward:
//   xhat = x * rstd,  g = dy * w
//   dx = rstd * (g - xhat * mean(g * xhat))     one row per warp/block
//   dw = sum_rows dy * xhat
// dw without atomics: per-slice column partials, then an in-order f64 sum
// per column (kernels/cuda/norm_params.cuh), the same on every run.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/norm_params.cuh"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T, int kRowThreads>
__global__ void __launch_bounds__(kRowThreads == 32 ? kThreads : kRowThreads)
    rmsnorm_rows(const T* x, const float* w, float eps, T* y, float* rstd, int64_t rows,
                 int64_t C) {
  constexpr int kBlock = kRowThreads == 32 ? kThreads : kRowThreads;
  constexpr int kRows = kBlock / kRowThreads;
  __shared__ float smem[kRowThreads / 32];
  const int tid = int(threadIdx.x) % kRowThreads;
  for (int64_t rb = int64_t(blockIdx.x) * kRows; rb < rows; rb += int64_t(gridDim.x) * kRows) {
    const int64_t r = rb + threadIdx.x / kRowThreads;
    const bool live = r < rows;
    const T* xr = x + (live ? r : 0) * C;
    float ss = 0.0f;
    if (live) for_row(xr, C, tid, kRowThreads, [&](int64_t, float v) { ss += v * v; });
    ss = row_allreduce<kRowThreads>(ss, SumOp{}, smem);
    if (!live) continue;
    const float rs = 1.0f / sqrtf(ss / float(C) + eps);
    if (tid == 0) rstd[r] = rs;
    map_row(xr, y + r * C, C, tid, kRowThreads, [=](int64_t i, float v) { return v * rs * w[i]; });
  }
}

template <typename T, int kRowThreads>
__global__ void __launch_bounds__(kRowThreads == 32 ? kThreads : kRowThreads)
    rmsnorm_dx_rows(const T* dy, const T* x, const float* w, const float* rstd, T* dx, int64_t rows,
                    int64_t C) {
  constexpr int kBlock = kRowThreads == 32 ? kThreads : kRowThreads;
  constexpr int kRows = kBlock / kRowThreads;
  __shared__ float smem[kRowThreads / 32];
  const int tid = int(threadIdx.x) % kRowThreads;
  const float inv_c = 1.0f / float(C);
  for (int64_t rb = int64_t(blockIdx.x) * kRows; rb < rows; rb += int64_t(gridDim.x) * kRows) {
    const int64_t r = rb + threadIdx.x / kRowThreads;
    const bool live = r < rows;
    const int64_t base = (live ? r : 0) * C;
    const float rs = live ? rstd[r] : 0.0f;
    float sgx = 0.0f;
    if (live)
      for_row2(x + base, dy + base, C, tid, kRowThreads,
               [&](int64_t i, float xv, float gy) { sgx += gy * w[i] * (xv * rs); });
    sgx = row_allreduce<kRowThreads>(sgx, SumOp{}, smem);
    if (!live) continue;
    const float mgx = sgx * inv_c;
    map_row2(x + base, dy + base, dx + base, C, tid, kRowThreads,
             [=](int64_t i, float xv, float gy) { return rs * (gy * w[i] - xv * rs * mgx); });
  }
}

// One block: 32 columns x a slice of rows; writes pw[slice, c].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_param_partials(const T* dy, const T* x, const float* rstd, float* pw, int64_t rows,
                           int64_t C, int64_t per_slice) {
  constexpr int kLanes = kThreads / 32;
  __shared__ float sw[kLanes][32];
  const int lc = int(threadIdx.x) % 32, lr = int(threadIdx.x) / 32;
  const int64_t c = int64_t(blockIdx.x) * 32 + lc, slice = blockIdx.y;
  const int64_t r0 = slice * per_slice, r1 = min(rows, r0 + per_slice);
  float aw = 0.0f;
  if (c < C)
    for (int64_t r = r0 + lr; r < r1; r += kLanes)
      aw += to_f32(dy[r * C + c]) * (to_f32(x[r * C + c]) * rstd[r]);
  sw[lr][lc] = aw;
  __syncthreads();
  if (lr == 0 && c < C) {
    float t = sw[0][lc];
#pragma unroll
    for (int j = 1; j < kLanes; ++j) t += sw[j][lc];
    pw[slice * C + c] = t;
  }
}

template <typename T>
void forward(const Tensor& x, const float* w, float eps, Tensor& y, float* rstd) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const T* xp = data_ptr<const T>(x);
  T* yp = data_ptr<T>(y);
  cudaStream_t stream = stream_of(x);
  if (C <= 1024) {
    const auto blocks = unsigned(std::min<int64_t>((rows + 7) / 8, INT32_MAX));
    rmsnorm_rows<T, 32><<<blocks, kThreads, 0, stream>>>(xp, w, eps, yp, rstd, rows, C);
  } else {
    const auto blocks = unsigned(std::min<int64_t>(rows, INT32_MAX));
    rmsnorm_rows<T, 512><<<blocks, 512, 0, stream>>>(xp, w, eps, yp, rstd, rows, C);
  }
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void backward(const Tensor& dy, const Tensor& x, const float* w, const float* rstd, Tensor& dx,
              float* dw) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const T* gp = data_ptr<const T>(dy);
  const T* xp = data_ptr<const T>(x);
  cudaStream_t stream = stream_of(x);
  if (dx.defined()) {
    T* dp = data_ptr<T>(dx);
    if (C <= 1024) {
      const auto blocks = unsigned(std::min<int64_t>((rows + 7) / 8, INT32_MAX));
      rmsnorm_dx_rows<T, 32><<<blocks, kThreads, 0, stream>>>(gp, xp, w, rstd, dp, rows, C);
    } else {
      const auto blocks = unsigned(std::min<int64_t>(rows, INT32_MAX));
      rmsnorm_dx_rows<T, 512><<<blocks, 512, 0, stream>>>(gp, xp, w, rstd, dp, rows, C);
    }
    KEEL_CUDA_CHECK(cudaGetLastError());
  }
  if (!dw) return;
  const ParamSlices sl(rows, C);
  Tensor work = scratch(sl.slices * C * int64_t(sizeof(float)), x.device());  // (slices, C)
  float* pw = data_ptr<float>(work);
  const dim3 grid{unsigned((C + 31) / 32), unsigned(sl.slices)};
  rmsnorm_param_partials<T><<<grid, kThreads, 0, stream>>>(gp, xp, rstd, pw, rows, C, sl.per_slice);
  KEEL_CUDA_CHECK(cudaGetLastError());
  sum_param_partials(pw, sl.slices, C, dw, x.device(), stream);
}

}  // namespace

void rmsnorm(const Tensor& x, const float* w, float eps, Tensor& y, float* rstd) {
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "rmsnorm", forward<T>(x, w, eps, y, rstd));
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const float* w, const float* rstd,
                      Tensor& dx, float* dw) {
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "rmsnorm backward", backward<T>(dy, x, w, rstd, dx, dw));
}

}  // namespace keel::kernels::cuda
