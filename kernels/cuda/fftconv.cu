// CUDA FFT long convolution (kernels/fftconv.h) on cuFFT, n = the power of
// two >= T + L - 1, h = n / 2, P = 2 (h + 1) floats per row:
//   forward: U = R2C(pad(u)), K = R2C(pad(k)); y = C2R(U K_c)[:T] / n + D u
//   du = C2R(conj(K_c) DY)[:T] / n + D dy
//   dk = C2R(sum_b conj(U) DY)[:L] / n     dD = sum_b sum_t dy u
// Transforms run in place on rows of P floats (the real row of n, then room
// for its h+1 bins), batched over the rows, with plans cached per (device,
// n, batch, direction) and their work area taken from keel's allocator on
// the current stream. Our own kernels do the rest: the zero-padded,
// converting load of strided rows; the pointwise product with the filter
// spectrum broadcast over the batch; the scale, skip term and crop to T in
// one pass. The dk sum over b is one thread per (c, bin) adding b in order
// in f64, and dD one block per channel reducing in a fixed order, so both
// are the same on every run.
#include <cufft.h>

#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda {

namespace {

#define KEEL_CUFFT_CHECK(stmt)                                                             \
  do {                                                                                     \
    cufftResult keel_fr_ = (stmt);                                                         \
    if (keel_fr_ != CUFFT_SUCCESS) [[unlikely]]                                            \
      ::keel::detail::cuda_fail(#stmt, cufft_error(keel_fr_).c_str(), __FILE__, __LINE__); \
  } while (0)

std::string cufft_error(cufftResult r) { return "cuFFT error " + std::to_string(int(r)); }

constexpr int kThreads = 256;

struct Strides3 {
  int64_t b, c, t;
};
Strides3 strides3(const Tensor& x) { return {x.stride(0), x.stride(1), x.stride(2)}; }

// ---- plans ---------------------------------------------------------------------------

struct Plan {
  cufftHandle handle = 0;
  size_t work_bytes = 0;
};

// A batched 1-D real transform of n points on rows of P floats (in place).
Plan& plan_for(int device, int64_t n, int64_t batch, bool inverse) {
  static std::mutex mu;
  static auto* cache = new std::map<std::tuple<int, int64_t, int64_t, bool>, Plan*>;  // leaked
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(device, n, batch, inverse);
  auto it = cache->find(key);
  if (it != cache->end()) return *it->second;
  auto* p = new Plan;
  long long len = n, real_pitch = n + 2, bins = n / 2 + 1;
  KEEL_CUFFT_CHECK(cufftCreate(&p->handle));
  KEEL_CUFFT_CHECK(cufftSetAutoAllocation(p->handle, 0));
  if (inverse)
    KEEL_CUFFT_CHECK(cufftMakePlanMany64(p->handle, 1, &len, &bins, 1, bins, &real_pitch, 1,
                                         real_pitch, CUFFT_C2R, batch, &p->work_bytes));
  else
    KEEL_CUFFT_CHECK(cufftMakePlanMany64(p->handle, 1, &len, &real_pitch, 1, real_pitch, &bins, 1,
                                         bins, CUFFT_R2C, batch, &p->work_bytes));
  cache->emplace(key, p);
  return *p;
}

// In-place transform of `rows` rows of P floats at buf on the current stream.
void transform(float* buf, int64_t n, int64_t rows, bool inverse, Device device) {
  Plan& p = plan_for(device.index, n, rows, inverse);
  const cudaStream_t stream = ::keel::cuda::current_stream(device.index);
  Tensor work = scratch(int64_t(p.work_bytes), device);  // stream-ordered, freed after
  // One plan may be shared by threads: bind stream and work area and launch
  // under a lock (the launch is asynchronous, so the lock is brief).
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  KEEL_CUFFT_CHECK(cufftSetStream(p.handle, stream));
  KEEL_CUFFT_CHECK(cufftSetWorkArea(p.handle, work.raw_data()));
  if (inverse)
    KEEL_CUFFT_CHECK(cufftExecC2R(p.handle, reinterpret_cast<cufftComplex*>(buf), buf));
  else
    KEEL_CUFFT_CHECK(cufftExecR2C(p.handle, buf, reinterpret_cast<cufftComplex*>(buf)));
}

// ---- kernels -------------------------------------------------------------------------

// The row kernels below run one block per row (grid-striding over rows),
// threads over the row's elements: one division per row, not per element.

// dst[r, t] = x[b, c, t] as f32 for t < len, 0 for len <= t < n; r = b C + c.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    pad_rows(const T* x, Strides3 xs, int64_t C, int64_t rows, int64_t len, int64_t n,
             int64_t pitch, float* dst) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + (r / C) * xs.b + (r % C) * xs.c;
    float* d = dst + r * pitch;
    for (int64_t t = threadIdx.x; t < n; t += blockDim.x)
      d[t] = t < len ? to_f32(xr[t * xs.t]) : 0.0f;
  }
}

// X[r, f] *= K[r % C, f] (or its conjugate), over rows of `bins` bins.
template <bool kConj>
__global__ void __launch_bounds__(kThreads)
    multiply_spectra(float2* X, const float2* K, int64_t C, int64_t rows, int64_t bins) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float2* xr = X + r * bins;
    const float2* kr = K + (r % C) * bins;
    for (int64_t f = threadIdx.x; f < bins; f += blockDim.x) {
      const float2 a = xr[f], w = kr[f];
      const float wi = kConj ? -w.y : w.y;
      xr[f] = make_float2(a.x * w.x - a.y * wi, a.x * wi + a.y * w.x);
    }
  }
}

// y[b, c, t] = buf[r, t] * scale + D[c] * x[b, c, t] for t < T, y contiguous.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    finish_rows(const float* buf, int64_t pitch, float scale, const T* x, Strides3 xs, const T* D,
                int64_t ds, int64_t C, int64_t rows, int64_t T_len, T* y) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t c = r % C;
    const T* xr = x + (r / C) * xs.b + c * xs.c;
    const float d = D ? to_f32(D[c * ds]) : 0.0f;
    const float* br = buf + r * pitch;
    T* yr = y + r * T_len;
    for (int64_t t = threadIdx.x; t < T_len; t += blockDim.x) {
      float v = br[t] * scale;
      if (D) v += d * to_f32(xr[t * xs.t]);
      yr[t] = from_f32<T>(v);
    }
  }
}

// S[c, f] = sum_b conj(U[b C + c, f]) DY[b C + c, f], b in order, in f64.
__global__ void __launch_bounds__(kThreads)
    correlate_batch(const float2* U, const float2* DY, int64_t B, int64_t C, int64_t bins,
                    float2* S) {
  const int64_t total = C * bins, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    double sr = 0.0, si = 0.0;
    for (int64_t b = 0; b < B; ++b) {
      const float2 u = U[b * C * bins + i], g = DY[b * C * bins + i];
      sr += double(u.x * g.x + u.y * g.y);
      si += double(u.x * g.y - u.y * g.x);
    }
    S[i] = make_float2(float(sr), float(si));
  }
}

// dk[c, s] = buf[c, s] * scale for s < L, dk contiguous (C, L).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    crop_rows(const float* buf, int64_t pitch, float scale, int64_t C, int64_t L, T* dk) {
  const int64_t total = C * L, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step)
    dk[i] = from_f32<T>(buf[(i / L) * pitch + i % L] * scale);
}

// Block c: dD[c] = sum_{b,t} dy[b,c,t] u[b,c,t] in f64, reduced in a fixed order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    skip_grad(const T* u, Strides3 us, const T* dy, Strides3 gs, int64_t B, int64_t C,
              int64_t T_len, T* dD) {
  __shared__ double smem[kThreads / 32];
  const int64_t BT = B * T_len;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < BT; i += blockDim.x) {
      const int64_t b = i / T_len, t = i % T_len;
      acc += double(to_f32(dy[b * gs.b + c * gs.c + t * gs.t]) *
                    to_f32(u[b * us.b + c * us.c + t * us.t]));
    }
    const double s = block_allreduce<kThreads>(acc, SumOp{}, smem);
    if (threadIdx.x == 0) dD[c] = from_f32<T>(float(s));
  }
}

// ---- launchers -----------------------------------------------------------------------

// One block per row, up to the grid's limit (the kernels grid-stride past it).
unsigned row_grid(int64_t rows) { return unsigned(std::clamp<int64_t>(rows, 1, INT32_MAX)); }

// Rows of P floats for `rows` rows: a (rows, P) f32 scratch tensor.
Tensor row_buffer(int64_t rows, int64_t n, Device device) {
  return empty({rows, n + 2}, DType::F32, device);  // (rows, P)
}

// The spectra of the rows of a (B, C, len) operand (B = 1 for a (C, len)
// filter with strides (0, sc, sl)), zero padded to n, in a fresh buffer.
template <typename T>
Tensor spectra_of(const T* x, Strides3 xs, int64_t B, int64_t C, int64_t len, int64_t n,
                  Device device) {
  const int64_t rows = B * C;
  Tensor buf = row_buffer(rows, n, device);  // (rows, P)
  cudaStream_t stream = ::keel::cuda::current_stream(device.index);
  pad_rows<T><<<row_grid(rows), kThreads, 0, stream>>>(x, xs, C, rows, len, n, n + 2,
                                                       data_ptr<float>(buf));
  KEEL_CUDA_CHECK(cudaGetLastError());
  transform(data_ptr<float>(buf), n, rows, false, device);
  return buf;
}

template <typename T>
Tensor filter_spectra(const Tensor& k, int64_t n) {
  return spectra_of<T>(data_ptr<const T>(k), Strides3{0, k.stride(0), k.stride(1)}, 1, k.size(0),
                       k.size(1), n, k.device());
}

template <typename T>
void forward(const Tensor& u, const Tensor& k, const Tensor& D, int64_t n, Tensor& y) {
  const int64_t B = u.size(0), C = u.size(1), T_len = u.size(2), rows = B * C, bins = n / 2 + 1;
  const Device dev = u.device();
  cudaStream_t stream = stream_of(u);
  Tensor K = filter_spectra<T>(k, n);                                                // (C, P)
  Tensor U = spectra_of<T>(data_ptr<const T>(u), strides3(u), B, C, T_len, n, dev);  // (B C, P)
  multiply_spectra<false><<<row_grid(rows), kThreads, 0, stream>>>(
      data_ptr<float2>(U), data_ptr<const float2>(K), C, rows, bins);
  KEEL_CUDA_CHECK(cudaGetLastError());
  transform(data_ptr<float>(U), n, rows, true, dev);
  finish_rows<T><<<row_grid(rows), kThreads, 0, stream>>>(
      data_ptr<const float>(U), n + 2, 1.0f / float(n), data_ptr<const T>(u), strides3(u),
      D.defined() ? data_ptr<const T>(D) : nullptr, D.defined() ? D.stride(0) : 0, C, rows, T_len,
      data_ptr<T>(y));
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void backward(const Tensor& u, const Tensor& k, const Tensor& D, const Tensor& dy, int64_t n,
              Tensor* du, Tensor* dk, Tensor* dD) {
  const int64_t B = u.size(0), C = u.size(1), T_len = u.size(2), L = k.size(1);
  const int64_t rows = B * C, bins = n / 2 + 1;
  const Device dev = u.device();
  cudaStream_t stream = stream_of(u);
  const float scale = 1.0f / float(n);
  if (dD && C > 0) {
    const auto blocks = unsigned(std::min<int64_t>(C, INT32_MAX));
    skip_grad<T><<<blocks, kThreads, 0, stream>>>(data_ptr<const T>(u), strides3(u),
                                                  data_ptr<const T>(dy), strides3(dy), B, C, T_len,
                                                  data_ptr<T>(*dD));
    KEEL_CUDA_CHECK(cudaGetLastError());
  }
  if (!du && !dk) return;
  Tensor G = spectra_of<T>(data_ptr<const T>(dy), strides3(dy), B, C, T_len, n, dev);  // (B C, P)
  if (dk) {
    Tensor U = spectra_of<T>(data_ptr<const T>(u), strides3(u), B, C, T_len, n, dev);  // (B C, P)
    Tensor S = row_buffer(C, n, dev);                                                  // (C, P)
    correlate_batch<<<grid_for(C * bins, kThreads, dev.index), kThreads, 0, stream>>>(
        data_ptr<const float2>(U), data_ptr<const float2>(G), B, C, bins, data_ptr<float2>(S));
    KEEL_CUDA_CHECK(cudaGetLastError());
    transform(data_ptr<float>(S), n, C, true, dev);
    crop_rows<T><<<grid_for(C * L, kThreads, dev.index), kThreads, 0, stream>>>(
        data_ptr<const float>(S), n + 2, scale, C, L, data_ptr<T>(*dk));
    KEEL_CUDA_CHECK(cudaGetLastError());
  }
  if (du) {
    Tensor K = filter_spectra<T>(k, n);  // (C, P)
    multiply_spectra<true><<<row_grid(rows), kThreads, 0, stream>>>(
        data_ptr<float2>(G), data_ptr<const float2>(K), C, rows, bins);
    KEEL_CUDA_CHECK(cudaGetLastError());
    transform(data_ptr<float>(G), n, rows, true, dev);
    finish_rows<T><<<row_grid(rows), kThreads, 0, stream>>>(
        data_ptr<const float>(G), n + 2, scale, data_ptr<const T>(dy), strides3(dy),
        D.defined() ? data_ptr<const T>(D) : nullptr, D.defined() ? D.stride(0) : 0, C, rows, T_len,
        data_ptr<T>(*du));
    KEEL_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace

void fftconv(const Tensor& u, const Tensor& k, const Tensor& D, int64_t n, Tensor& y) {
  KEEL_CUDA_DISPATCH_FLOAT(u.dtype(), "fftconv", forward<T>(u, k, D, n, y));
}

void fftconv_backward(const Tensor& u, const Tensor& k, const Tensor& D, const Tensor& dy,
                      int64_t n, Tensor* du, Tensor* dk, Tensor* dD) {
  KEEL_CUDA_DISPATCH_FLOAT(u.dtype(), "fftconv backward", backward<T>(u, k, D, dy, n, du, dk, dD));
}

}  // namespace keel::kernels::cuda
