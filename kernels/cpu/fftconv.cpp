// CPU FFT long convolution (kernels/fftconv.h) on keel's own FFT
// (kernels/cpu/fft.h), n = the power of two >= T + L - 1, h = n / 2:
//   forward, per (b, c) row: U = rfft(pad(u)); y = irfft(U K_c)[:T] + D u
//   du  = irfft(conj(K_c) DY)[:T] + D dy
//   dk  = irfft(sum_b conj(U) DY)[:L]     dD = sum_b sum_t dy u
// Each filter spectrum K_c is computed once per call and shared by the
// batch: by the task that runs all of channel c's rows when there are
// channels enough for the threads, else stored for all channels up front
// (parallel over C) and rows run in parallel. Per-thread scratch is
// allocated once per call: the padded row is built while it is loaded (and
// converted to f32), the product is one pass over h+1 bins, and the crop,
// skip term and store are one pass over T.
// The dk sum over b runs in the spectral domain (the inverse FFT is linear)
// in f64, in b order, inside a fixed partition of the batch into chunks that
// depends on (B, C, n) only, so results do not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/cpu/fft.h"
#include "kernels/dispatch.h"

namespace keel::kernels {

namespace {

// A (B, C, T) operand's rows, read through its strides.
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

// x[0, len) as f32 into dst[0, len), zeros in dst[len, n).
template <typename T>
void load_padded(const T* x, int64_t st, int64_t len, int64_t n, float* dst) {
  if (st == 1) {
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) dst[t] = load_f32(x[t]);
  } else {
    for (int64_t t = 0; t < len; ++t) dst[t] = load_f32(x[t * st]);
  }
  std::fill(dst + len, dst + n, 0.0f);
}

std::vector<float> params_f32(const Tensor& t) {
  return t.to(DType::F32).contiguous().to_vector<float>();
}

// The filter spectra K_c = rfft(pad(k[c], n)), h+1 bins each, every one
// computed once per call: either stored for all channels up front (in
// parallel over C) when one channel's rows are spread over several tasks,
// or computed by the one task that runs all of channel c's rows, into its
// own scratch (no (C, h+1) buffer to allocate, fault in and read back).
// Both ways run the same code on the same data: the same bits.
template <typename T>
class FilterSpectra {
 public:
  FilterSpectra(const Tensor& k, int64_t n, bool stored)
      : k_(static_cast<const T*>(k.raw_data())),
        sc_(k.stride(0)),
        sl_(k.stride(1)),
        L_(k.size(1)),
        n_(n),
        bins_(n / 2 + 1) {
    if (!stored) return;
    const int64_t C = k.size(0);
    // From keel's allocator, which keeps large freed blocks: no fresh pages
    // to fault in on every call. Every bin is written below.
    store_ = empty({2, C, bins_});  // (re/im, C, h+1)
    re_ = store_.data<float>();
    im_ = re_ + C * bins_;
#pragma omp parallel if (C > 1 && C * n >= kParallelGrain)
    {
      std::vector<float> buf(static_cast<size_t>(n));
#pragma omp for schedule(static)
      for (int64_t c = 0; c < C; ++c) compute(c, buf.data(), re_ + c * bins_, im_ + c * bins_);
    }
  }

  // K_c: the stored bins, or computed into (re, im) using buf (n floats).
  std::pair<const float*, const float*> get(int64_t c, float* buf, float* re, float* im) const {
    if (re_) return {re_ + c * bins_, im_ + c * bins_};
    compute(c, buf, re, im);
    return {re, im};
  }

 private:
  void compute(int64_t c, float* buf, float* re, float* im) const {
    load_padded(k_ + c * sc_, sl_, L_, n_, buf);
    fft::r2c(n_, buf, re, im);
  }

  const T* k_;
  int64_t sc_, sl_, L_, n_, bins_;
  Tensor store_;  // (2, C, h+1) when stored
  float* re_ = nullptr;
  float* im_ = nullptr;
};

// Whether each channel's rows run as one task (K_c computed in it) rather
// than rows spread over tasks: when the channels alone keep the threads busy.
bool by_channel(int64_t B, int64_t C) { return B == 1 || C >= 4 * int64_t(omp_get_max_threads()); }

// (xr + i xi) *= conj?(w) over `bins` bins.
template <bool kConj>
void multiply(int64_t bins, float* xr, float* xi, const float* wr, const float* wi) {
  constexpr float s = kConj ? -1.0f : 1.0f;
#pragma omp simd
  for (int64_t f = 0; f < bins; ++f) {
    const float ar = xr[f], ai = xi[f], br = wr[f], bi = s * wi[f];
    xr[f] = ar * br - ai * bi;
    xi[f] = ar * bi + ai * br;
  }
}

template <typename T>
void forward_impl(const Tensor& u, const Tensor& k, const Tensor& D, int64_t n, Tensor& y) {
  const int64_t B = u.size(0), C = u.size(1), T_len = u.size(2), bins = n / 2 + 1;
  const bool per_channel = by_channel(B, C);
  const FilterSpectra<T> K(k, n, !per_channel);
  const std::vector<float> dv = D.defined() ? params_f32(D) : std::vector<float>(size_t(C), 0.f);
  const Rows<T> U(u);
  T* yp = y.data<T>();  // contiguous (B, C, T)
  // Tasks: a channel (all its rows, b in order) or a single (b, c) row.
  const int64_t tasks = per_channel ? C : B * C;
#pragma omp parallel if (tasks > 1 && B * C * n >= kParallelGrain)
  {
    std::vector<float> xbuf(static_cast<size_t>(n)), out(static_cast<size_t>(n));
    std::vector<float> re(static_cast<size_t>(bins)), im(static_cast<size_t>(bins));
    std::vector<float> kre(static_cast<size_t>(bins)), kim(static_cast<size_t>(bins));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t c = task % C;
      const auto [kr, ki] = K.get(c, xbuf.data(), kre.data(), kim.data());
      const int64_t b0 = per_channel ? 0 : task / C, b1 = per_channel ? B : b0 + 1;
      for (int64_t b = b0; b < b1; ++b) {
        float* x = xbuf.data();
        load_padded(U.row(b, c), U.st, T_len, n, x);
        fft::r2c(n, x, re.data(), im.data());
        multiply<false>(bins, re.data(), im.data(), kr, ki);
        fft::c2r(n, re.data(), im.data(), out.data());
        const float d = dv[size_t(c)];
        const float* o = out.data();
        T* yr = yp + (b * C + c) * T_len;
#pragma omp simd
        for (int64_t t = 0; t < T_len; ++t) yr[t] = store_f32<T>(o[t] + d * x[t]);
      }
    }
  }
}

// Batch chunks per channel for the dk / dD sums: enough (channel, chunk)
// tasks to keep threads busy when C is small, with the f64 partial spectra
// they need kept under ~256 MB. A function of (B, C, n) only.
int64_t batch_chunks(int64_t B, int64_t C, int64_t n) {
  constexpr int64_t kMinTasks = 64;
  constexpr int64_t kMaxPartialBytes = int64_t(256) << 20;
  const int64_t bytes_per_chunk = std::max<int64_t>(1, C * (n / 2 + 1) * 16);
  int64_t chunks = std::min(B, (kMinTasks + C - 1) / std::max<int64_t>(C, 1));
  chunks = std::min(chunks, kMaxPartialBytes / bytes_per_chunk);
  return std::max<int64_t>(chunks, 1);
}

template <typename T>
void backward_impl(const Tensor& u, const Tensor& k, const Tensor& D, const Tensor& dy, int64_t n,
                   Tensor* du, Tensor* dk, Tensor* dD) {
  const int64_t B = u.size(0), C = u.size(1), T_len = u.size(2), L = k.size(1);
  const int64_t bins = n / 2 + 1;
  const std::vector<float> dv =
      D.defined() && du ? params_f32(D) : std::vector<float>(size_t(C), 0.f);
  const Rows<T> U(u), G(dy);
  T* dup = du ? du->data<T>() : nullptr;  // contiguous (B, C, T)
  T* dkp = dk ? dk->data<T>() : nullptr;  // contiguous (C, L)
  T* dDp = dD ? dD->data<T>() : nullptr;  // (C)
  const bool need_u = dk || dD;
  // A fixed partition of the batch for the dk / dD sums; for du alone any
  // split gives the same bits.
  const int64_t chunks = need_u ? batch_chunks(B, C, n) : by_channel(B, C) ? 1 : B;
  const FilterSpectra<T> K(k, n, du && chunks > 1);
  const int64_t tasks = C * chunks;
  // Partial sums of the chunks when a channel has more than one: (C, chunks, h+1) f64.
  const bool partial = need_u && chunks > 1;
  std::vector<double> part_r(partial && dk ? size_t(tasks * bins) : 0);
  std::vector<double> part_i(part_r.size()), part_d(partial ? size_t(tasks) : 0);

  // dk[c, :L] from a summed spectrum: one inverse FFT per channel.
  auto finish_dk = [&](int64_t c, const double* ar, const double* ai, float* re, float* im,
                       float* out) {
    for (int64_t f = 0; f < bins; ++f) {
      re[f] = float(ar[f]);
      im[f] = float(ai[f]);
    }
    fft::c2r(n, re, im, out);
    for (int64_t s = 0; s < L; ++s) dkp[c * L + s] = store_f32<T>(out[s]);
  };

#pragma omp parallel if (tasks > 1 && B * C * n >= kParallelGrain)
  {
    std::vector<float> gbuf(static_cast<size_t>(n)), xbuf(static_cast<size_t>(n)),
        out(static_cast<size_t>(n));
    std::vector<float> gr(static_cast<size_t>(bins)), gi(static_cast<size_t>(bins)),
        re(static_cast<size_t>(bins)), im(static_cast<size_t>(bins));
    std::vector<float> kre(dup ? static_cast<size_t>(bins) : 0), kim(kre.size());
    std::vector<double> ar(dk ? static_cast<size_t>(bins) : 0), ai(ar.size());
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t c = task / chunks, j = task % chunks;
      const int64_t b0 = j * B / chunks, b1 = (j + 1) * B / chunks;
      std::fill(ar.begin(), ar.end(), 0.0);
      std::fill(ai.begin(), ai.end(), 0.0);
      double dsum = 0.0;
      const float* kr = nullptr;
      const float* ki = nullptr;
      if (dup) std::tie(kr, ki) = K.get(c, xbuf.data(), kre.data(), kim.data());
      for (int64_t b = b0; b < b1; ++b) {
        float* g = gbuf.data();
        load_padded(G.row(b, c), G.st, T_len, n, g);
        fft::r2c(n, g, gr.data(), gi.data());
        if (dup) {
          std::copy(gr.begin(), gr.end(), re.begin());
          std::copy(gi.begin(), gi.end(), im.begin());
          multiply<true>(bins, re.data(), im.data(), kr, ki);
          fft::c2r(n, re.data(), im.data(), out.data());
          const float d = dv[size_t(c)];
          const float* o = out.data();
          T* dr = dup + (b * C + c) * T_len;
#pragma omp simd
          for (int64_t t = 0; t < T_len; ++t) dr[t] = store_f32<T>(o[t] + d * g[t]);
        }
        if (!need_u) continue;
        float* x = xbuf.data();
        load_padded(U.row(b, c), U.st, T_len, n, x);
        if (dD) {
          double s = 0.0;
#pragma omp simd reduction(+ : s)
          for (int64_t t = 0; t < T_len; ++t) s += double(g[t] * x[t]);
          dsum += s;
        }
        if (dk) {
          fft::r2c(n, x, re.data(), im.data());
          // conj(U) DY, summed over b in f64.
          double* a_r = ar.data();
          double* a_i = ai.data();
          const float* xr = re.data();
          const float* xi = im.data();
          const float* yr = gr.data();
          const float* yi = gi.data();
#pragma omp simd
          for (int64_t f = 0; f < bins; ++f) {
            a_r[f] += double(xr[f] * yr[f] + xi[f] * yi[f]);
            a_i[f] += double(xr[f] * yi[f] - xi[f] * yr[f]);
          }
        }
      }
      if (!need_u) continue;
      if (partial) {
        if (dk) {
          std::copy(ar.begin(), ar.end(), part_r.begin() + task * bins);
          std::copy(ai.begin(), ai.end(), part_i.begin() + task * bins);
        }
        part_d[size_t(task)] = dsum;
      } else {
        if (dk) finish_dk(c, ar.data(), ai.data(), re.data(), im.data(), out.data());
        if (dD) dDp[c] = store_f32<T>(float(dsum));
      }
    }
    if (partial) {
      // The chunks of each channel, summed in chunk order.
#pragma omp for schedule(static)
      for (int64_t c = 0; c < C; ++c) {
        if (dk) {
          const double* p0r = part_r.data() + c * chunks * bins;
          const double* p0i = part_i.data() + c * chunks * bins;
          std::copy(p0r, p0r + bins, ar.begin());
          std::copy(p0i, p0i + bins, ai.begin());
          for (int64_t j = 1; j < chunks; ++j)
            for (int64_t f = 0; f < bins; ++f) {
              ar[size_t(f)] += p0r[j * bins + f];
              ai[size_t(f)] += p0i[j * bins + f];
            }
          finish_dk(c, ar.data(), ai.data(), re.data(), im.data(), out.data());
        }
        if (dD) {
          double s = 0.0;
          for (int64_t j = 0; j < chunks; ++j) s += part_d[size_t(c * chunks + j)];
          dDp[c] = store_f32<T>(float(s));
        }
      }
    }
  }
}

}  // namespace

namespace cpu {

void fftconv(const Tensor& u, const Tensor& k, const Tensor& D, int64_t n, Tensor& y) {
  KEEL_DISPATCH_FLOAT(u.dtype(), "fftconv", forward_impl<T>(u, k, D, n, y));
}

void fftconv_backward(const Tensor& u, const Tensor& k, const Tensor& D, const Tensor& dy,
                      int64_t n, Tensor* du, Tensor* dk, Tensor* dD) {
  KEEL_DISPATCH_FLOAT(u.dtype(), "fftconv backward", backward_impl<T>(u, k, D, dy, n, du, dk, dD));
}

}  // namespace cpu
}  // namespace keel::kernels
