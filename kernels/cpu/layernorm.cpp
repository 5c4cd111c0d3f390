// CPU LayerNorm over contiguous (R, C) rows. The forward takes three flat
// `omp simd` passes per row (mean, centred variance, write); the backward
// one visit per row:
//   xhat = (x - mean) * rstd,  g = dy * w
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//   dw = sum_rows dy * xhat,   db = sum_rows dy
// Parameter gradients are summed per row block into f32 partials, then the
// partials are added in block order in f64; the blocks depend only on R, so
// the result is the same for any thread count.
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
void forward_rows(const T* x, const float* w, const float* b, float eps, T* y, float* mean,
                  float* rstd, int64_t rows, int64_t C) {
#pragma omp parallel for schedule(static) if (rows * C >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < C; ++i) s += load_f32(xr[i]);
    const float mu = s / float(C);
    // Two passes (mean, then centred squares) stay accurate when |mean| >> std.
    float v = 0.0f;
#pragma omp simd reduction(+ : v)
    for (int64_t i = 0; i < C; ++i) {
      float d = load_f32(xr[i]) - mu;
      v += d * d;
    }
    const float rs = 1.0f / std::sqrt(v / float(C) + eps);
    mean[r] = mu;
    rstd[r] = rs;
    if (b) {
#pragma omp simd
      for (int64_t i = 0; i < C; ++i)
        yr[i] = store_f32<T>((load_f32(xr[i]) - mu) * rs * w[i] + b[i]);
    } else {
#pragma omp simd
      for (int64_t i = 0; i < C; ++i) yr[i] = store_f32<T>((load_f32(xr[i]) - mu) * rs * w[i]);
    }
  }
}

template <typename T, bool Dx, bool Params>
void backward_blocks(const T* dy, const T* x, const float* w, const float* mean, const float* rstd,
                     T* dx, float* pw, float* pb, int64_t rows, int64_t C, int64_t blocks,
                     int64_t per_block) {
  const float inv_c = 1.0f / float(C);
#pragma omp parallel for schedule(static) if (rows * C >= kParallelGrain && blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    float* bw = Params ? pw + blk * C : nullptr;
    float* bb = Params ? pb + blk * C : nullptr;
    if constexpr (Params) {
      std::fill(bw, bw + C, 0.0f);
      std::fill(bb, bb + C, 0.0f);
    }
    const int64_t r_end = std::min(rows, (blk + 1) * per_block);
    for (int64_t r = blk * per_block; r < r_end; ++r) {
      const T* xr = x + r * C;
      const T* gr = dy + r * C;
      const float mu = mean[r], rs = rstd[r];
      float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (int64_t i = 0; i < C; ++i) {
        float xh = (load_f32(xr[i]) - mu) * rs, gy = load_f32(gr[i]), g = gy * w[i];
        sum_g += g;
        sum_gx += g * xh;
        if constexpr (Params) {
          bw[i] += gy * xh;
          bb[i] += gy;
        }
      }
      if constexpr (Dx) {
        T* dr = dx + r * C;
        const float mg = sum_g * inv_c, mgx = sum_gx * inv_c;
#pragma omp simd
        for (int64_t i = 0; i < C; ++i) {
          float xh = (load_f32(xr[i]) - mu) * rs, g = load_f32(gr[i]) * w[i];
          dr[i] = store_f32<T>(rs * (g - mg - xh * mgx));
        }
      }
    }
  }
}

template <typename T>
void run_backward(const Tensor& dy, const Tensor& x, const float* w, const float* mean,
                  const float* rstd, Tensor& dx, float* dw, float* db) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const RowBlocks rb(rows);
  const int64_t blocks = rb.blocks, per_block = rb.per_block;
  const T* gp = static_cast<const T*>(dy.raw_data());
  const T* xp = static_cast<const T*>(x.raw_data());
  T* dp = dx.defined() ? static_cast<T*>(dx.raw_data()) : nullptr;
  const bool params = dw != nullptr;
  std::vector<float> pw, pb;  // (blocks, C) partial sums
  if (params) {
    pw.resize(size_t(blocks * C));
    pb.resize(size_t(blocks * C));
  }
  auto go = [&]<bool Dx, bool Params>() {
    backward_blocks<T, Dx, Params>(gp, xp, w, mean, rstd, dp, pw.data(), pb.data(), rows, C,
                                   blocks, per_block);
  };
  cpu::dispatch_wanted(dp != nullptr, params, go);
  if (params) {
    reduce_partials(pw.data(), blocks, C, dw);
    if (db) reduce_partials(pb.data(), blocks, C, db);
  }
}

}  // namespace

namespace cpu {

void layernorm(const Tensor& x, const float* w, const float* b, float eps, Tensor& y, float* mean,
               float* rstd) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  KEEL_DISPATCH_FLOAT(x.dtype(), "layernorm", {
    forward_rows<T>(static_cast<const T*>(x.raw_data()), w, b, eps, static_cast<T*>(y.raw_data()),
                    mean, rstd, rows, C);
  });
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const float* w, const float* mean,
                        const float* rstd, Tensor& dx, float* dw, float* db) {
  KEEL_DISPATCH_FLOAT(x.dtype(), "layernorm backward",
                      run_backward<T>(dy, x, w, mean, rstd, dx, dw, db));
}

}  // namespace cpu
}  // namespace keel::kernels
