// CUDA LayerNorm over contiguous (R, C) rows.
// Forward: one warp per row for C <= 1024 (8 rows per block), else one
// block per row; three passes over the row (mean, centred variance, write)
// as on the CPU, the re-reads served from cache; 16-byte loads where rows
// align. mean and rstd (f32) are saved per row.
// Backward:
//   xhat = (x - mean) * rstd,  g = dy * w
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      one row per warp/block
//   dw = sum_rows dy * xhat,   db = sum_rows dy
// dw/db without atomics: a block takes 32 columns of a slice of rows (8 lanes
// down the rows, each warp reading 32 neighbouring columns of one row) and
// writes its sums to a (slices, C) partial; a second kernel adds the
// partials of each column in slice order in f64. Slices depend only on R,
// so the gradients are the same on every run and every device.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/norm_params.cuh"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;

struct Sum2 {
  float a, b;
};
__device__ __forceinline__ Sum2 shfl_xor(Sum2 v, int o) {
  return {__shfl_xor_sync(0xffffffffu, v.a, o), __shfl_xor_sync(0xffffffffu, v.b, o)};
}
struct AddSum2 {
  __device__ __forceinline__ Sum2 operator()(Sum2 x, Sum2 y) const {
    return {x.a + y.a, x.b + y.b};
  }
};

template <typename T, int kRowThreads>
__global__ void __launch_bounds__(kRowThreads == 32 ? kThreads : kRowThreads)
    layernorm_rows(const T* x, const float* w, const float* b, float eps, T* y, float* mean,
                   float* rstd, int64_t rows, int64_t C) {
  constexpr int kBlock = kRowThreads == 32 ? kThreads : kRowThreads;
  constexpr int kRows = kBlock / kRowThreads;
  __shared__ float smem[kRowThreads / 32];
  const int tid = int(threadIdx.x) % kRowThreads;
  for (int64_t rb = int64_t(blockIdx.x) * kRows; rb < rows; rb += int64_t(gridDim.x) * kRows) {
    const int64_t r = rb + threadIdx.x / kRowThreads;
    const bool live = r < rows;
    const T* xr = x + (live ? r : 0) * C;
    float s = 0.0f;
    if (live) for_row(xr, C, tid, kRowThreads, [&](int64_t, float v) { s += v; });
    const float mu = row_allreduce<kRowThreads>(s, SumOp{}, smem) / float(C);
    // Centred squares in a second pass stay accurate when |mean| >> std.
    float v2 = 0.0f;
    if (live)
      for_row(xr, C, tid, kRowThreads, [&](int64_t, float v) {
        const float d = v - mu;
        v2 += d * d;
      });
    const float rs = 1.0f / sqrtf(row_allreduce<kRowThreads>(v2, SumOp{}, smem) / float(C) + eps);
    if (!live) continue;
    if (tid == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
    T* yr = y + r * C;
    if (b)
      map_row(xr, yr, C, tid, kRowThreads,
              [=](int64_t i, float v) { return (v - mu) * rs * w[i] + b[i]; });
    else
      map_row(xr, yr, C, tid, kRowThreads,
              [=](int64_t i, float v) { return (v - mu) * rs * w[i]; });
  }
}

template <typename T, int kRowThreads>
__global__ void __launch_bounds__(kRowThreads == 32 ? kThreads : kRowThreads)
    layernorm_dx_rows(const T* dy, const T* x, const float* w, const float* mean, const float* rstd,
                      T* dx, int64_t rows, int64_t C) {
  constexpr int kBlock = kRowThreads == 32 ? kThreads : kRowThreads;
  constexpr int kRows = kBlock / kRowThreads;
  __shared__ Sum2 smem[kRowThreads / 32];
  const int tid = int(threadIdx.x) % kRowThreads;
  const float inv_c = 1.0f / float(C);
  for (int64_t rb = int64_t(blockIdx.x) * kRows; rb < rows; rb += int64_t(gridDim.x) * kRows) {
    const int64_t r = rb + threadIdx.x / kRowThreads;
    const bool live = r < rows;
    const int64_t base = (live ? r : 0) * C;
    const float mu = live ? mean[r] : 0.0f, rs = live ? rstd[r] : 0.0f;
    Sum2 s{0.0f, 0.0f};
    if (live)
      for_row2(x + base, dy + base, C, tid, kRowThreads, [&](int64_t i, float xv, float gy) {
        const float g = gy * w[i];
        s.a += g;
        s.b += g * ((xv - mu) * rs);
      });
    s = row_allreduce<kRowThreads>(s, AddSum2{}, smem);
    if (!live) continue;
    const float mg = s.a * inv_c, mgx = s.b * inv_c;
    map_row2(x + base, dy + base, dx + base, C, tid, kRowThreads,
             [=](int64_t i, float xv, float gy) {
               return rs * (gy * w[i] - mg - (xv - mu) * rs * mgx);
             });
  }
}

// One block: 32 columns x a slice of rows; writes pw/pb[slice, c].
template <typename T, bool Bias>
__global__ void __launch_bounds__(kThreads)
    layernorm_param_partials(const T* dy, const T* x, const float* mean, const float* rstd,
                             float* pw, float* pb, int64_t rows, int64_t C, int64_t per_slice) {
  constexpr int kLanes = kThreads / 32;
  __shared__ float sw[kLanes][32], sb[kLanes][32];
  const int lc = int(threadIdx.x) % 32, lr = int(threadIdx.x) / 32;
  const int64_t c = int64_t(blockIdx.x) * 32 + lc, slice = blockIdx.y;
  const int64_t r0 = slice * per_slice, r1 = min(rows, r0 + per_slice);
  float aw = 0.0f, ab = 0.0f;
  if (c < C) {
    for (int64_t r = r0 + lr; r < r1; r += kLanes) {
      const float gy = to_f32(dy[r * C + c]);
      aw += gy * ((to_f32(x[r * C + c]) - mean[r]) * rstd[r]);
      if constexpr (Bias) ab += gy;
    }
  }
  sw[lr][lc] = aw;
  sb[lr][lc] = ab;
  __syncthreads();
  if (lr == 0 && c < C) {
    float tw = sw[0][lc], tb = sb[0][lc];
#pragma unroll
    for (int j = 1; j < kLanes; ++j) {
      tw += sw[j][lc];
      tb += sb[j][lc];
    }
    pw[slice * C + c] = tw;
    if constexpr (Bias) pb[slice * C + c] = tb;
  }
}

template <typename T>
void forward(const Tensor& x, const float* w, const float* b, float eps, Tensor& y, float* mean,
             float* rstd) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const T* xp = data_ptr<const T>(x);
  T* yp = data_ptr<T>(y);
  cudaStream_t stream = stream_of(x);
  if (C <= 1024) {
    const auto blocks = unsigned(std::min<int64_t>((rows + 7) / 8, INT32_MAX));
    layernorm_rows<T, 32><<<blocks, kThreads, 0, stream>>>(xp, w, b, eps, yp, mean, rstd, rows, C);
  } else {
    const auto blocks = unsigned(std::min<int64_t>(rows, INT32_MAX));
    layernorm_rows<T, 512><<<blocks, 512, 0, stream>>>(xp, w, b, eps, yp, mean, rstd, rows, C);
  }
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void backward(const Tensor& dy, const Tensor& x, const float* w, const float* mean,
              const float* rstd, Tensor& dx, float* dw, float* db) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const T* gp = data_ptr<const T>(dy);
  const T* xp = data_ptr<const T>(x);
  cudaStream_t stream = stream_of(x);
  if (dx.defined()) {
    T* dp = data_ptr<T>(dx);
    if (C <= 1024) {
      const auto blocks = unsigned(std::min<int64_t>((rows + 7) / 8, INT32_MAX));
      layernorm_dx_rows<T, 32><<<blocks, kThreads, 0, stream>>>(gp, xp, w, mean, rstd, dp, rows, C);
    } else {
      const auto blocks = unsigned(std::min<int64_t>(rows, INT32_MAX));
      layernorm_dx_rows<T, 512><<<blocks, 512, 0, stream>>>(gp, xp, w, mean, rstd, dp, rows, C);
    }
    KEEL_CUDA_CHECK(cudaGetLastError());
  }
  if (!dw) return;
  const ParamSlices sl(rows, C);
  Tensor work = scratch(2 * sl.slices * C * int64_t(sizeof(float)), x.device());  // (2, slices, C)
  float* pw = data_ptr<float>(work);
  float* pb = pw + sl.slices * C;
  const dim3 grid{unsigned((C + 31) / 32), unsigned(sl.slices)};
  if (db)
    layernorm_param_partials<T, true>
        <<<grid, kThreads, 0, stream>>>(gp, xp, mean, rstd, pw, pb, rows, C, sl.per_slice);
  else
    layernorm_param_partials<T, false>
        <<<grid, kThreads, 0, stream>>>(gp, xp, mean, rstd, pw, pb, rows, C, sl.per_slice);
  KEEL_CUDA_CHECK(cudaGetLastError());
  sum_param_partials(pw, sl.slices, C, dw, x.device(), stream);
  if (db) sum_param_partials(pb, sl.slices, C, db, x.device(), stream);
}

}  // namespace

void layernorm(const Tensor& x, const float* w, const float* b, float eps, Tensor& y, float* mean,
               float* rstd) {
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "layernorm", forward<T>(x, w, b, eps, y, mean, rstd));
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const float* w, const float* mean,
                        const float* rstd, Tensor& dx, float* dw, float* db) {
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "layernorm backward",
                           backward<T>(dy, x, w, mean, rstd, dx, dw, db));
}

}  // namespace keel::kernels::cuda
