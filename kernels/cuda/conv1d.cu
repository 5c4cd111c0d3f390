// CUDA depthwise causal conv1d (kernels/conv1d.h):
//   y[b,c,t] = bias[c] + sum_k w[c,k] * x[b,c,t-(K-1)+k]
// Forward and dx: one thread per output element, t fastest, so neighbouring
// threads read neighbouring inputs; taps in the CPU's order. x, dy, weight
// and bias may be strided views (read through their strides, no copies).
// dweight and dbias: one block per channel sums over (b, t) in f64, up to 8
// taps (and the bias) per pass over the channel's data, then reduces across
// the block in a fixed order: the same result on every run, no atomics.
#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kTapsPerPass = 8;

struct Dims {
  int64_t B, C, T, K;
};

struct Strides3 {
  int64_t b, c, t;
  explicit Strides3(const Tensor& x) : b(x.stride(0)), c(x.stride(1)), t(x.stride(2)) {}
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv_forward(const T* x, Strides3 xs, const T* w, int64_t wc, int64_t wk, const T* bias,
                 int64_t bs, Dims d, T* y) {
  const int64_t n = d.B * d.C * d.T, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t t = i % d.T, bc = i / d.T, c = bc % d.C, b = bc / d.C;
    const T* xr = x + b * xs.b + c * xs.c;
    float acc = bias ? to_f32(bias[c * bs]) : 0.0f;
    for (int64_t k = 0; k < d.K; ++k) {
      const int64_t shift = d.K - 1 - k;  // tap k reads x[t - shift]; earlier t read the zero pad
      if (t >= shift) acc += to_f32(w[c * wc + k * wk]) * to_f32(xr[(t - shift) * xs.t]);
    }
    y[i] = from_f32<T>(acc);
  }
}

// dx[t] = sum_k w[k] * dy[t + shift_k]: the transpose of the forward's shifts.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv_backward_dx(const T* dy, Strides3 gs, const T* w, int64_t wc, int64_t wk, Dims d, T* dx) {
  const int64_t n = d.B * d.C * d.T, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t t = i % d.T, bc = i / d.T, c = bc % d.C, b = bc / d.C;
    const T* gr = dy + b * gs.b + c * gs.c;
    float acc = 0.0f;
    for (int64_t k = 0; k < d.K; ++k) {
      const int64_t shift = d.K - 1 - k;
      if (t + shift < d.T) acc += to_f32(w[c * wc + k * wk]) * to_f32(gr[(t + shift) * gs.t]);
    }
    dx[i] = from_f32<T>(acc);
  }
}

// Block c: dw[c, k] = sum_{b,t} dy[b,c,t] x[b,c,t-shift_k], db[c] = sum dy[b,c,t].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv_backward_params(const T* x, Strides3 xs, const T* dy, Strides3 gs, Dims d, T* dw, T* db) {
  __shared__ double smem[kThreads / 32];
  const int64_t BT = d.B * d.T;
  for (int64_t c = blockIdx.x; c < d.C; c += gridDim.x) {
    for (int64_t k0 = 0; k0 < (dw ? d.K : 1); k0 += kTapsPerPass) {
      const bool bias_pass = db && k0 == 0;
      double acc[kTapsPerPass] = {}, acc_b = 0.0;
      for (int64_t i = threadIdx.x; i < BT; i += blockDim.x) {
        const int64_t b = i / d.T, t = i % d.T;
        const float g = to_f32(dy[b * gs.b + c * gs.c + t * gs.t]);
        if (bias_pass) acc_b += double(g);
        if (dw) {
          const T* xr = x + b * xs.b + c * xs.c;
#pragma unroll
          for (int j = 0; j < kTapsPerPass; ++j) {
            const int64_t k = k0 + j, shift = d.K - 1 - k;
            if (k < d.K && t >= shift) acc[j] += double(g * to_f32(xr[(t - shift) * xs.t]));
          }
        }
      }
      if (dw) {
#pragma unroll
        for (int j = 0; j < kTapsPerPass; ++j) {
          const double s = block_allreduce<kThreads>(acc[j], SumOp{}, smem);
          if (threadIdx.x == 0 && k0 + j < d.K) dw[c * d.K + k0 + j] = from_f32<T>(float(s));
        }
      }
      if (bias_pass) {
        const double s = block_allreduce<kThreads>(acc_b, SumOp{}, smem);
        if (threadIdx.x == 0) db[c] = from_f32<T>(float(s));
      }
    }
  }
}

template <typename T>
void forward(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y) {
  const Dims d{x.size(0), x.size(1), x.size(2), weight.size(1)};
  const int64_t n = d.B * d.C * d.T;
  if (n == 0) return;
  conv_forward<T><<<grid_for(n, kThreads, x.device().index), kThreads, 0, stream_of(x)>>>(
      data_ptr<const T>(x), Strides3(x), data_ptr<const T>(weight), weight.stride(0),
      weight.stride(1), bias.defined() ? data_ptr<const T>(bias) : nullptr,
      bias.defined() ? bias.stride(0) : 0, d, data_ptr<T>(y));
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dx, Tensor* dweight,
              Tensor* dbias) {
  const Dims d{x.size(0), x.size(1), x.size(2), weight.size(1)};
  cudaStream_t stream = stream_of(x);
  const int dev = x.device().index;
  if (dx && dx->numel() > 0) {
    conv_backward_dx<T><<<grid_for(dx->numel(), kThreads, dev), kThreads, 0, stream>>>(
        data_ptr<const T>(dy), Strides3(dy), data_ptr<const T>(weight), weight.stride(0),
        weight.stride(1), d, data_ptr<T>(*dx));
    KEEL_CUDA_CHECK(cudaGetLastError());
  }
  if ((dweight || dbias) && d.C > 0) {
    // dweight (C, K) and dbias (C) are fresh contiguous tensors from the launcher.
    const auto blocks = unsigned(std::min<int64_t>(d.C, INT32_MAX));
    conv_backward_params<T><<<blocks, kThreads, 0, stream>>>(
        data_ptr<const T>(x), Strides3(x), data_ptr<const T>(dy), Strides3(dy), d,
        dweight ? data_ptr<T>(*dweight) : nullptr, dbias ? data_ptr<T>(*dbias) : nullptr);
    KEEL_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace

void causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y) {
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "causal_conv1d", forward<T>(x, weight, bias, y));
}

void causal_conv1d_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dx,
                            Tensor* dweight, Tensor* dbias) {
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "causal_conv1d backward",
                           backward<T>(x, weight, dy, dx, dweight, dbias));
}

}  // namespace keel::kernels::cuda
