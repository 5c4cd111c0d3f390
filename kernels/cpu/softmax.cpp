// CPU softmax and log-softmax over contiguous (outer, n, inner) data. When
// the softmax dim is last (inner == 1) each row takes flat `omp simd` passes
// (max, sum of exp, write); otherwise kLanes neighbouring columns are done
// together with per-lane max/sum arrays, so every inner loop still walks
// contiguous memory instead of striding by `inner`. Rows go to OpenMP
// threads; each row is summed by one thread, so results do not depend on
// the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/dispatch.h"

namespace keel::kernels {

namespace {

// Every exp here takes a value minus its row max or log-sum-exp (<= 0).
using cpu::exp_nonpositive;

// Columns handled together on the non-last-dim path: wide enough for a few
// SIMD registers, small enough that the per-lane arrays stay on the stack.
constexpr int64_t kLanes = 64;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <typename T, bool Log>
void forward_rows(const T* x, T* y, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    // A NaN is skipped by the max but poisons the sum, so it spreads to the row.
    float m = kNegInf;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; ++i) m = std::max(m, load_f32(xr[i]));
    float s = 0.0f;
    if constexpr (std::is_same_v<T, float> && !Log) {
      // f32 output can hold exp(x - m) between passes, saving a second exp.
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < n; ++i) {
        float e = exp_nonpositive(xr[i] - m);
        yr[i] = e;
        s += e;
      }
      const float inv = 1.0f / s;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yr[i] *= inv;
    } else {
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < n; ++i) s += exp_nonpositive(load_f32(xr[i]) - m);
      if constexpr (Log) {
        // (x - m) - log(s), not x - (m + log(s)): x - m is exact near the max.
        const float log_s = std::log(s);
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) yr[i] = store_f32<T>((load_f32(xr[i]) - m) - log_s);
      } else {
        const float inv = 1.0f / s;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) yr[i] = store_f32<T>(exp_nonpositive(load_f32(xr[i]) - m) * inv);
      }
    }
  }
}

template <typename T, bool Log>
void forward_cols(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  const int64_t blocks = (inner + kLanes - 1) / kLanes;
  const int64_t items = outer * blocks;
#pragma omp parallel for schedule(static) if (outer * n * inner >= kParallelGrain && items > 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t o = item / blocks, i0 = (item % blocks) * kLanes;
    const int64_t w = std::min(kLanes, inner - i0);
    const T* xb = x + o * n * inner + i0;
    T* yb = y + o * n * inner + i0;
    float m[kLanes], s[kLanes];
    for (int64_t l = 0; l < w; ++l) m[l] = kNegInf, s[l] = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      const T* xr = xb + j * inner;
#pragma omp simd
      for (int64_t l = 0; l < w; ++l) m[l] = std::max(m[l], load_f32(xr[l]));
    }
    for (int64_t j = 0; j < n; ++j) {
      const T* xr = xb + j * inner;
#pragma omp simd
      for (int64_t l = 0; l < w; ++l) s[l] += exp_nonpositive(load_f32(xr[l]) - m[l]);
    }
    // s becomes what the write pass needs: log(sum) or 1/sum.
    for (int64_t l = 0; l < w; ++l) s[l] = Log ? std::log(s[l]) : 1.0f / s[l];
    for (int64_t j = 0; j < n; ++j) {
      const T* xr = xb + j * inner;
      T* yr = yb + j * inner;
#pragma omp simd
      for (int64_t l = 0; l < w; ++l) {
        float d = load_f32(xr[l]) - m[l];
        yr[l] = store_f32<T>(Log ? d - s[l] : exp_nonpositive(d) * s[l]);
      }
    }
  }
}

// softmax:     dx = y * (dy - sum(dy * y))
// log_softmax: dx = dy - exp(y) * sum(dy)
template <typename T, bool Log>
void backward_rows(const T* y, const T* dy, T* dx, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * n;
    const T* gr = dy + r * n;
    T* dr = dx + r * n;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i)
      acc += Log ? load_f32(gr[i]) : load_f32(gr[i]) * load_f32(yr[i]);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      float yv = load_f32(yr[i]), g = load_f32(gr[i]);
      dr[i] = store_f32<T>(Log ? g - exp_nonpositive(yv) * acc : yv * (g - acc));
    }
  }
}

template <typename T, bool Log>
void backward_cols(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner) {
  const int64_t blocks = (inner + kLanes - 1) / kLanes;
  const int64_t items = outer * blocks;
#pragma omp parallel for schedule(static) if (outer * n * inner >= kParallelGrain && items > 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t o = item / blocks, i0 = (item % blocks) * kLanes;
    const int64_t w = std::min(kLanes, inner - i0);
    const int64_t base = o * n * inner + i0;
    float acc[kLanes];
    for (int64_t l = 0; l < w; ++l) acc[l] = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      const T* yr = y + base + j * inner;
      const T* gr = dy + base + j * inner;
#pragma omp simd
      for (int64_t l = 0; l < w; ++l)
        acc[l] += Log ? load_f32(gr[l]) : load_f32(gr[l]) * load_f32(yr[l]);
    }
    for (int64_t j = 0; j < n; ++j) {
      const T* yr = y + base + j * inner;
      const T* gr = dy + base + j * inner;
      T* dr = dx + base + j * inner;
#pragma omp simd
      for (int64_t l = 0; l < w; ++l) {
        float yv = load_f32(yr[l]), g = load_f32(gr[l]);
        dr[l] = store_f32<T>(Log ? g - exp_nonpositive(yv) * acc[l] : yv * (g - acc[l]));
      }
    }
  }
}

template <typename T, bool Log>
void run_forward(const Tensor& x, Tensor& y, int64_t outer, int64_t n, int64_t inner) {
  const T* xp = static_cast<const T*>(x.raw_data());
  T* yp = static_cast<T*>(y.raw_data());
  if (inner == 1) forward_rows<T, Log>(xp, yp, outer, n);
  else forward_cols<T, Log>(xp, yp, outer, n, inner);
}

template <typename T, bool Log>
void run_backward(const Tensor& y, const Tensor& dy, Tensor& dx, int64_t outer, int64_t n,
                  int64_t inner) {
  const T* yp = static_cast<const T*>(y.raw_data());
  const T* gp = static_cast<const T*>(dy.raw_data());
  T* dp = static_cast<T*>(dx.raw_data());
  if (inner == 1) backward_rows<T, Log>(yp, gp, dp, outer, n);
  else backward_cols<T, Log>(yp, gp, dp, outer, n, inner);
}

}  // namespace

namespace cpu {

void softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, Tensor& y) {
  KEEL_DISPATCH_FLOAT(x.dtype(), "softmax", {
    if (log) run_forward<T, true>(x, y, outer, n, inner);
    else run_forward<T, false>(x, y, outer, n, inner);
  });
}

void softmax_backward(const Tensor& y, const Tensor& dy, int64_t outer, int64_t n, int64_t inner,
                      bool log, Tensor& dx) {
  KEEL_DISPATCH_FLOAT(y.dtype(), "softmax backward", {
    if (log) run_backward<T, true>(y, dy, dx, outer, n, inner);
    else run_backward<T, false>(y, dy, dx, outer, n, inner);
  });
}

}  // namespace cpu
}  // namespace keel::kernels
