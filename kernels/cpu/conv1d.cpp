// CPU depthwise causal conv1d: one (b, c) row per work item. The K taps are
// the outer loop, each adding a shifted copy of the row, so the inner loop
// over t is a flat vectorizable axpy. Parameter gradients are summed per row
// in f64, then over the batch in a fixed order (independent of threads).
#include "kernels/conv1d.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/dispatch.h"

namespace keel::kernels {

namespace {

// A (C, K) weight or (C) bias as dense f32 (tiny, so one copy is free).
std::vector<float> params_f32(const Tensor& t) {
  return t.to(DType::F32).contiguous().to_vector<float>();
}

// One length-n row with element stride `st` as f32: the row itself when it
// already is dense f32, else converted into `scratch`.
template <typename T>
const float* row_f32(const T* p, int64_t st, int64_t n, float* scratch) {
  if constexpr (std::is_same_v<T, float>)
    if (st == 1) return p;
  for (int64_t t = 0; t < n; ++t) scratch[t] = load_f32(p[t * st]);
  return scratch;
}

// A (B, C, T) operand's row pointers.
template <typename T>
struct Rows {
  const T* base;
  int64_t sb, sc, st;
  explicit Rows(const Tensor& t)
      : base(static_cast<const T*>(t.raw_data())),
        sb(t.stride(0)),
        sc(t.stride(1)),
        st(t.stride(2)) {}
  const T* row(int64_t b, int64_t c) const { return base + b * sb + c * sc; }
};

template <typename T>
void forward_impl(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y) {
  const int64_t B = x.size(0), C = x.size(1), T_len = x.size(2), K = weight.size(1);
  const std::vector<float> w = params_f32(weight);
  const std::vector<float> bv =
      bias.defined() ? params_f32(bias) : std::vector<float>(size_t(C), 0.0f);
  const Rows<T> X(x);
  T* yp = y.data<T>();  // contiguous (B, C, T)
  const int64_t rows = B * C;
#pragma omp parallel if (rows > 1 && rows * T_len * K >= kParallelGrain)
  {
    std::vector<float> xbuf(static_cast<size_t>(T_len)), acc(static_cast<size_t>(T_len));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / C, c = r % C;
      const float* xr = row_f32(X.row(b, c), X.st, T_len, xbuf.data());
      const float* wc = w.data() + c * K;
      float* a = acc.data();
      std::fill(a, a + T_len, bv[size_t(c)]);
      for (int64_t k = 0; k < K; ++k) {
        const int64_t shift = K - 1 - k;  // tap k reads x[t - shift]; earlier t read the zero pad
        const float wk = wc[k];
#pragma omp simd
        for (int64_t t = shift; t < T_len; ++t) a[t] += wk * xr[t - shift];
      }
      T* yr = yp + r * T_len;
#pragma omp simd
      for (int64_t t = 0; t < T_len; ++t) yr[t] = store_f32<T>(a[t]);
    }
  }
}

template <typename T>
void backward_impl(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dx,
                   Tensor* dweight, Tensor* dbias) {
  const int64_t B = x.size(0), C = x.size(1), T_len = x.size(2), K = weight.size(1);
  const std::vector<float> w = params_f32(weight);
  const Rows<T> X(x), G(dy);
  T* dxp = dx ? dx->data<T>() : nullptr;  // contiguous (B, C, T)
  const int64_t rows = B * C;
  // Per (b, c) row: the K tap sums, then the bias sum.
  const int64_t stride = K + 1;
  std::vector<double> part(dweight || dbias ? size_t(rows * stride) : 0);
#pragma omp parallel if (rows > 1 && rows * T_len * K >= kParallelGrain)
  {
    std::vector<float> xbuf(static_cast<size_t>(T_len)), gbuf(static_cast<size_t>(T_len));
    std::vector<float> acc(static_cast<size_t>(T_len));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / C, c = r % C;
      const float* gr = row_f32(G.row(b, c), G.st, T_len, gbuf.data());
      if (dxp) {
        // dx[t] = sum_k w[k] * dy[t + shift_k]: the transpose of the forward's shifts.
        const float* wc = w.data() + c * K;
        float* a = acc.data();
        std::fill(a, a + T_len, 0.0f);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t shift = K - 1 - k;
          const float wk = wc[k];
#pragma omp simd
          for (int64_t t = 0; t < T_len - shift; ++t) a[t] += wk * gr[t + shift];
        }
        T* dr = dxp + r * T_len;
#pragma omp simd
        for (int64_t t = 0; t < T_len; ++t) dr[t] = store_f32<T>(a[t]);
      }
      double* pr = part.empty() ? nullptr : part.data() + r * stride;
      if (dweight) {
        const float* xr = row_f32(X.row(b, c), X.st, T_len, xbuf.data());
        for (int64_t k = 0; k < K; ++k) {
          const int64_t shift = K - 1 - k;
          double s = 0.0;
#pragma omp simd reduction(+ : s)
          for (int64_t t = shift; t < T_len; ++t) s += double(gr[t] * xr[t - shift]);
          pr[k] = s;
        }
      }
      if (dbias) {
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t t = 0; t < T_len; ++t) s += double(gr[t]);
        pr[K] = s;
      }
    }
  }
  // Sum the rows over the batch, b in order.
  T* dwp = dweight ? dweight->data<T>() : nullptr;  // contiguous (C, K)
  T* dbp = dbias ? dbias->data<T>() : nullptr;      // (C)
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t k = 0; k <= K; ++k) {
      if ((k < K && !dwp) || (k == K && !dbp)) continue;
      double s = 0.0;
      for (int64_t b = 0; b < B; ++b) s += part[size_t((b * C + c) * stride + k)];
      if (k < K)
        dwp[c * K + k] = store_f32<T>(float(s));
      else
        dbp[c] = store_f32<T>(float(s));
    }
  }
}

}  // namespace

namespace cpu {

void causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y) {
  KEEL_DISPATCH_FLOAT(x.dtype(), "causal_conv1d", forward_impl<T>(x, weight, bias, y));
}

void causal_conv1d_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dx,
                            Tensor* dweight, Tensor* dbias) {
  KEEL_DISPATCH_FLOAT(x.dtype(), "causal_conv1d backward",
                      backward_impl<T>(x, weight, dy, dx, dweight, dbias));
}

}  // namespace cpu
}  // namespace keel::kernels
