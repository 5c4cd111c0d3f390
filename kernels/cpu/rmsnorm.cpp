// CPU RMSNorm over contiguous (R, C) rows. The forward takes two flat
// `omp simd` passes per row (mean square, write); the backward one visit
// per row:
//   xhat = x * rstd,  g = dy * w
//   dx = rstd * (g - xhat * mean(g * xhat)),   dw = sum_rows dy * xhat
// dw is summed per row block into f32 partials, then the partials are added
// in block order in f64; the blocks depend only on R, so dw is the same for
// any thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/cpu/row_blocks.h"
#include "kernels/dispatch.h"

namespace keel::kernels {

namespace {

using cpu::reduce_partials;
using cpu::RowBlocks;

template <typename T>
void forward_rows(const T* x, const float* w, float eps, T* y, float* rstd, int64_t rows,
                  int64_t C) {
#pragma omp parallel for schedule(static) if (rows * C >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < C; ++i) {
      float v = load_f32(xr[i]);
      ss += v * v;
    }
    const float rs = 1.0f / std::sqrt(ss / float(C) + eps);
    rstd[r] = rs;
#pragma omp simd
    for (int64_t i = 0; i < C; ++i) yr[i] = store_f32<T>(load_f32(xr[i]) * rs * w[i]);
  }
}

template <typename T, bool Dx, bool Params>
void backward_blocks(const T* dy, const T* x, const float* w, const float* rstd, T* dx, float* pw,
                     int64_t rows, int64_t C, int64_t blocks, int64_t per_block) {
  const float inv_c = 1.0f / float(C);
#pragma omp parallel for schedule(static) if (rows * C >= kParallelGrain && blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    float* bw = Params ? pw + blk * C : nullptr;
    if constexpr (Params) std::fill(bw, bw + C, 0.0f);
    const int64_t r_end = std::min(rows, (blk + 1) * per_block);
    for (int64_t r = blk * per_block; r < r_end; ++r) {
      const T* xr = x + r * C;
      const T* gr = dy + r * C;
      const float rs = rstd[r];
      float sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_gx)
      for (int64_t i = 0; i < C; ++i) {
        float xh = load_f32(xr[i]) * rs, gy = load_f32(gr[i]);
        sum_gx += gy * w[i] * xh;
        if constexpr (Params) bw[i] += gy * xh;
      }
      if constexpr (Dx) {
        T* dr = dx + r * C;
        const float mgx = sum_gx * inv_c;
#pragma omp simd
        for (int64_t i = 0; i < C; ++i) {
          float xh = load_f32(xr[i]) * rs, g = load_f32(gr[i]) * w[i];
          dr[i] = store_f32<T>(rs * (g - xh * mgx));
        }
      }
    }
  }
}

template <typename T>
void run_backward(const Tensor& dy, const Tensor& x, const float* w, const float* rstd, Tensor& dx,
                  float* dw) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const RowBlocks rb(rows);
  const int64_t blocks = rb.blocks, per_block = rb.per_block;
  const T* gp = static_cast<const T*>(dy.raw_data());
  const T* xp = static_cast<const T*>(x.raw_data());
  T* dp = dx.defined() ? static_cast<T*>(dx.raw_data()) : nullptr;
  std::vector<float> pw;  // (blocks, C) partial sums
  if (dw) pw.resize(size_t(blocks * C));
  auto go = [&]<bool Dx, bool Params>() {
    backward_blocks<T, Dx, Params>(gp, xp, w, rstd, dp, pw.data(), rows, C, blocks, per_block);
  };
  cpu::dispatch_wanted(dp != nullptr, dw != nullptr, go);
  if (dw) reduce_partials(pw.data(), blocks, C, dw);
}

}  // namespace

namespace cpu {

void rmsnorm(const Tensor& x, const float* w, float eps, Tensor& y, float* rstd) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  KEEL_DISPATCH_FLOAT(x.dtype(), "rmsnorm", {
    forward_rows<T>(static_cast<const T*>(x.raw_data()), w, eps, static_cast<T*>(y.raw_data()),
                    rstd, rows, C);
  });
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const float* w, const float* rstd,
                      Tensor& dx, float* dw) {
  KEEL_DISPATCH_FLOAT(x.dtype(), "rmsnorm backward", run_backward<T>(dy, x, w, rstd, dx, dw));
}

}  // namespace cpu
}  // namespace keel::kernels
