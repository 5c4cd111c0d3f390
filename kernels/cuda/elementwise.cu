// CUDA elementwise kernels: unary maps and their derivatives, binary ops
// with broadcasting, scalar ops and axpby. Math is f32 with the CPU path's
// formulas (kernels/cpu/elementwise.cpp); bf16/f16 are loaded as f32 and
// rounded to nearest even on store. Two kernels per (op, dtype):
//   - dense: every operand contiguous, of the output's shape and 16-byte
//     aligned: 16-byte loads/stores (4 f32 or 8 bf16/f16 per access) in a
//     grid-stride loop, scalar tail;
//   - strided: any views, broadcast operands with stride 0. Dims are merged
//     on the host first (a dense tensor is one dim), and the row-major
//     position is split into offsets with 32-bit division when it fits.
// The output may alias an input at the same index (add_, mul_scalar_).
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/elementwise.h"

namespace keel::kernels::cuda {

namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;
constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// 0.5 (1 + tanh u) = sigmoid(2u), as on the CPU: exactly 0 once the gate
// underflows, so gelu_tanh(-large) is -0.
__device__ __forceinline__ float gelu_tanh_gate(float x) {
  const float z = -2.0f * kSqrt2OverPi * (x + 0.044715f * x * x * x);
  return z > 87.0f ? 0.0f : 1.0f / (1.0f + expf(z));
}

template <UnaryOp Op>
__device__ __forceinline__ float apply_unary(float x) {
  if constexpr (Op == UnaryOp::Neg)
    return -x;
  else if constexpr (Op == UnaryOp::Exp)
    return expf(x);
  else if constexpr (Op == UnaryOp::Log)
    return logf(x);
  else if constexpr (Op == UnaryOp::Sqrt)
    return sqrtf(x);
  else if constexpr (Op == UnaryOp::Rsqrt)
    return 1.0f / sqrtf(x);
  else if constexpr (Op == UnaryOp::Tanh)
    return tanhf(x);
  else if constexpr (Op == UnaryOp::Sigmoid)
    return sigmoid_f(x);
  else if constexpr (Op == UnaryOp::Silu)
    return x * sigmoid_f(x);
  else if constexpr (Op == UnaryOp::Softplus)
    return x > 20.0f ? x : log1pf(expf(x));
  else if constexpr (Op == UnaryOp::Gelu)
    return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
  else if constexpr (Op == UnaryOp::GeluTanh)
    return x * gelu_tanh_gate(x);
  else if constexpr (Op == UnaryOp::Relu)
    return x > 0.0f ? x : 0.0f;
  else if constexpr (Op == UnaryOp::Abs)
    return fabsf(x);
  else if constexpr (Op == UnaryOp::Square)
    return x * x;
  else
    return sinf(x);  // Sin
}

// d f(x) / dx, given x and y = f(x).
template <UnaryOp Op>
__device__ __forceinline__ float unary_derivative(float x, float y) {
  if constexpr (Op == UnaryOp::Neg)
    return -1.0f;
  else if constexpr (Op == UnaryOp::Exp)
    return y;
  else if constexpr (Op == UnaryOp::Log)
    return 1.0f / x;
  else if constexpr (Op == UnaryOp::Sqrt)
    return 0.5f / y;
  else if constexpr (Op == UnaryOp::Rsqrt)
    return -0.5f * y * y * y;
  else if constexpr (Op == UnaryOp::Tanh)
    return 1.0f - y * y;
  else if constexpr (Op == UnaryOp::Sigmoid)
    return y * (1.0f - y);
  else if constexpr (Op == UnaryOp::Silu) {
    const float s = sigmoid_f(x);
    return s * (1.0f + x * (1.0f - s));
  } else if constexpr (Op == UnaryOp::Softplus) {
    return sigmoid_f(x);
  } else if constexpr (Op == UnaryOp::Gelu) {
    return 0.5f * (1.0f + erff(x * kInvSqrt2)) + x * kInvSqrt2Pi * expf(-0.5f * x * x);
  } else if constexpr (Op == UnaryOp::GeluTanh) {
    const float s = gelu_tanh_gate(x);  // 0.5 (1 - tanh^2 u) = 2 s (1 - s)
    return s + 2.0f * x * s * (1.0f - s) * kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
  } else if constexpr (Op == UnaryOp::Relu) {
    return x > 0.0f ? 1.0f : 0.0f;
  } else if constexpr (Op == UnaryOp::Abs) {
    return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
  } else if constexpr (Op == UnaryOp::Square) {
    return 2.0f * x;
  } else {
    return cosf(x);  // Sin
  }
}

template <BinaryOp Op>
__device__ __forceinline__ float apply_binary(float a, float b) {
  // _rn intrinsics: no fused multiply-add, so f32 results match the CPU's bit for bit.
  if constexpr (Op == BinaryOp::Add)
    return __fadd_rn(a, b);
  else if constexpr (Op == BinaryOp::Sub)
    return __fsub_rn(a, b);
  else if constexpr (Op == BinaryOp::Mul)
    return __fmul_rn(a, b);
  else if constexpr (Op == BinaryOp::Div)
    return a / b;
  else if constexpr (Op == BinaryOp::Pow)
    return powf(a, b);
  else if constexpr (Op == BinaryOp::Max)
    return a >= b ? a : b;
  else if constexpr (Op == BinaryOp::Min)
    return a <= b ? a : b;
  else
    return a == b ? 1.0f : 0.0f;  // Eq
}

template <UnaryOp Op>
struct UnaryF {
  __device__ __forceinline__ float operator()(float x) const { return apply_unary<Op>(x); }
};

template <UnaryOp Op>
struct UnaryBackwardF {
  __device__ __forceinline__ float operator()(float x, float y, float g) const {
    return g * unary_derivative<Op>(x, y);
  }
};

template <BinaryOp Op>
struct BinaryF {
  __device__ __forceinline__ float operator()(float a, float b) const {
    return apply_binary<Op>(a, b);
  }
};

// The scalar side is a runtime flag: the branch is uniform across the grid.
template <BinaryOp Op>
struct ScalarF {
  float s;
  bool first;
  __device__ __forceinline__ float operator()(float a) const {
    return first ? apply_binary<Op>(s, a) : apply_binary<Op>(a, s);
  }
};

struct AxpbyF {
  float alpha, beta;
  __device__ __forceinline__ float operator()(float a, float b) const {
    return __fadd_rn(__fmul_rn(alpha, a), __fmul_rn(beta, b));
  }
};

template <typename T, int N>
struct InPtrs {
  const T* p[N];
};

template <int N, typename F>
__device__ __forceinline__ float call(const F& f, const float (&v)[N]) {
  if constexpr (N == 1)
    return f(v[0]);
  else if constexpr (N == 2)
    return f(v[0], v[1]);
  else
    return f(v[0], v[1], v[2]);
}

template <typename T, int N, typename F>
__global__ void __launch_bounds__(kThreads) map_dense(T* out, InPtrs<T, N> in, int64_t n, F f) {
  constexpr int kV = Pack<T>::kN;
  const int64_t packs = n / kV;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t j = tid; j < packs; j += step) {
    Pack<T> a[N];
#pragma unroll
    for (int k = 0; k < N; ++k) a[k] = load_pack(in.p[k] + j * kV);
    Pack<T> o;
#pragma unroll
    for (int u = 0; u < kV; ++u) {
      float v[N];
#pragma unroll
      for (int k = 0; k < N; ++k) v[k] = to_f32(a[k].v[u]);
      o.v[u] = from_f32<T>(call<N>(f, v));
    }
    store_pack(out + j * kV, o);
  }
  for (int64_t i = packs * kV + tid; i < n; i += step) {
    float v[N];
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] = to_f32(in.p[k][i]);
    out[i] = from_f32<T>(call<N>(f, v));
  }
}

template <typename T, int N, typename F, typename Idx>
__global__ void __launch_bounds__(kThreads)
    map_strided(T* out, InPtrs<T, N> in, Layout<N + 1> L, int64_t n, F f) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[N + 1];
    layout_offsets<N + 1>(L, Idx(i), off);
    float v[N];
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] = to_f32(in.p[k][off[k + 1]]);
    out[off[0]] = from_f32<T>(call<N>(f, v));
  }
}

// out[i] = f(in0[i], ...) with the inputs broadcast to out's shape.
template <typename T, int N, typename F>
void launch_map(Tensor& out, const std::array<const Tensor*, N>& in, F f) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const int dev = out.device().index;
  cudaStream_t stream = stream_of(out);
  T* op = data_ptr<T>(out);
  InPtrs<T, N> ip;
  bool dense = out.is_contiguous() && aligned16(op);
  for (int k = 0; k < N; ++k) {
    ip.p[k] = data_ptr<const T>(*in[k]);
    dense = dense && in[k]->sizes() == out.sizes() && in[k]->is_contiguous() && aligned16(ip.p[k]);
  }
  if (dense) {
    const int64_t work = std::max<int64_t>(n / Pack<T>::kN, 1);
    map_dense<T, N, F><<<grid_for(work, kThreads, dev), kThreads, 0, stream>>>(op, ip, n, f);
    KEEL_CUDA_CHECK(cudaGetLastError());
    return;
  }
  std::array<Shape, N + 1> st;
  st[0] = out.strides();
  for (int k = 0; k < N; ++k) st[size_t(k) + 1] = ::keel::broadcast_strides(*in[k], out.sizes());
  const Layout<N + 1> L = make_layout<N + 1>(out.sizes(), st);
  const unsigned grid = grid_for(n, kThreads, dev);
  if (n <= int64_t(INT32_MAX))
    map_strided<T, N, F, uint32_t><<<grid, kThreads, 0, stream>>>(op, ip, L, n, f);
  else
    map_strided<T, N, F, uint64_t><<<grid, kThreads, 0, stream>>>(op, ip, L, n, f);
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <int N, typename F>
void map_float(const char* what, Tensor& out, const std::array<const Tensor*, N>& in, F f) {
  KEEL_CUDA_DISPATCH_FLOAT(out.dtype(), what, launch_map<T, N>(out, in, f));
}

#define KEEL_UNARY_CASES(M)                                                                  \
  M(Neg)                                                                                     \
  M(Exp)                                                                                     \
  M(Log)                                                                                     \
  M(Sqrt) M(Rsqrt) M(Tanh) M(Sigmoid) M(Silu) M(Softplus) M(Gelu) M(GeluTanh) M(Relu) M(Abs) \
      M(Square) M(Sin)
#define KEEL_BINARY_CASES(M) M(Add) M(Sub) M(Mul) M(Div) M(Pow) M(Max) M(Min) M(Eq)

}  // namespace

void unary(UnaryOp op, const Tensor& x, Tensor& out) {
  switch (op) {
#define M(NAME)                                                       \
  case UnaryOp::NAME:                                                 \
    map_float<1>(unary_name(op), out, {&x}, UnaryF<UnaryOp::NAME>{}); \
    break;
    KEEL_UNARY_CASES(M)
#undef M
  }
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx) {
  switch (op) {
#define M(NAME)                                                                       \
  case UnaryOp::NAME:                                                                 \
    map_float<3>(unary_name(op), dx, {&x, &y, &dy}, UnaryBackwardF<UnaryOp::NAME>{}); \
    break;
    KEEL_UNARY_CASES(M)
#undef M
  }
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  switch (op) {
#define M(NAME)                                                              \
  case BinaryOp::NAME:                                                       \
    map_float<2>(binary_name(op), out, {&a, &b}, BinaryF<BinaryOp::NAME>{}); \
    break;
    KEEL_BINARY_CASES(M)
#undef M
  }
}

void binary_scalar(BinaryOp op, const Tensor& a, double s, bool first, Tensor& out) {
  switch (op) {
#define M(NAME)                                                                         \
  case BinaryOp::NAME:                                                                  \
    map_float<1>(binary_name(op), out, {&a}, ScalarF<BinaryOp::NAME>{float(s), first}); \
    break;
    KEEL_BINARY_CASES(M)
#undef M
  }
}

void axpby(float alpha, const Tensor& a, float beta, const Tensor& b, Tensor& out) {
  map_float<2>("axpby", out, {&a, &b}, AxpbyF{alpha, beta});
}

}  // namespace keel::kernels::cuda
