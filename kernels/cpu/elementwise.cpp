// CPU elementwise kernels: one templated strided loop per arity, functors
// per op. Contiguous runs take a flat `omp simd` loop.
#include "kernels/elementwise.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/dispatch.h"

namespace keel::kernels {

namespace {

using cpu::exp_nonpositive;

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

inline float sigmoidf(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// The GELU-tanh gate 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(z)),
// z = -2u, with one exp_nonpositive and no float compare: for w = exp(-|z|)
// it is 1 / (1 + w) when z <= 0 and w / (1 + w) when z > 0, the numerator
// picked by z's sign bit. Nothing overflows; gelu(-large) = x * 0 = -0.
inline float gelu_tanh_gate(float x) {
  const float z = -2.0f * kSqrt2OverPi * (x + 0.044715f * x * x * x);
  const float w = exp_nonpositive(-std::fabs(z));
  const uint32_t neg = uint32_t(int32_t(std::bit_cast<uint32_t>(z)) >> 31);  // ~0 when z <= -0
  const float num = std::bit_cast<float>((std::bit_cast<uint32_t>(1.0f) & neg) |
                                         (std::bit_cast<uint32_t>(w) & ~neg));
  return num / (1.0f + w);
}

inline float apply_unary(UnaryOp op, float x) {
  switch (op) {
    case UnaryOp::Neg:
      return -x;
    case UnaryOp::Exp:
      return std::exp(x);
    case UnaryOp::Log:
      return std::log(x);
    case UnaryOp::Sqrt:
      return std::sqrt(x);
    case UnaryOp::Rsqrt:
      return 1.0f / std::sqrt(x);
    case UnaryOp::Tanh:
      return std::tanh(x);
    case UnaryOp::Sigmoid:
      return sigmoidf(x);
    case UnaryOp::Silu:
      return x * sigmoidf(x);
    case UnaryOp::Softplus:
      return x > 20.0f ? x : std::log1p(std::exp(x));
    case UnaryOp::Gelu:
      return 0.5f * x * (1.0f + std::erf(x * kInvSqrt2));
    case UnaryOp::GeluTanh:
      return x * gelu_tanh_gate(x);
    case UnaryOp::Relu:
      return x > 0.0f ? x : 0.0f;
    case UnaryOp::Abs:
      return std::fabs(x);
    case UnaryOp::Square:
      return x * x;
    case UnaryOp::Sin:
      return std::sin(x);
  }
  return 0.0f;
}

// d f(x) / dx, given x and y = f(x).
inline float unary_derivative(UnaryOp op, float x, float y) {
  switch (op) {
    case UnaryOp::Neg:
      return -1.0f;
    case UnaryOp::Exp:
      return y;
    case UnaryOp::Log:
      return 1.0f / x;
    case UnaryOp::Sqrt:
      return 0.5f / y;
    case UnaryOp::Rsqrt:
      return -0.5f * y * y * y;
    case UnaryOp::Tanh:
      return 1.0f - y * y;
    case UnaryOp::Sigmoid:
      return y * (1.0f - y);
    case UnaryOp::Silu: {
      float s = sigmoidf(x);
      return s * (1.0f + x * (1.0f - s));
    }
    case UnaryOp::Softplus:
      return sigmoidf(x);
    case UnaryOp::Gelu:
      return 0.5f * (1.0f + std::erf(x * kInvSqrt2)) + x * kInvSqrt2Pi * std::exp(-0.5f * x * x);
    case UnaryOp::GeluTanh: {
      // s = 0.5 (1 + tanh u), so 0.5 (1 - tanh^2 u) = 2 s (1 - s).
      const float s = gelu_tanh_gate(x);
      return s + 2.0f * x * s * (1.0f - s) * kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
    }
    case UnaryOp::Relu:
      return x > 0.0f ? 1.0f : 0.0f;
    case UnaryOp::Abs:
      return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
    case UnaryOp::Square:
      return 2.0f * x;
    case UnaryOp::Sin:
      return std::cos(x);
  }
  return 0.0f;
}

inline float apply_binary(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::Add:
      return a + b;
    case BinaryOp::Sub:
      return a - b;
    case BinaryOp::Mul:
      return a * b;
    case BinaryOp::Div:
      return a / b;
    case BinaryOp::Pow:
      return std::pow(a, b);
    case BinaryOp::Max:
      return a >= b ? a : b;
    case BinaryOp::Min:
      return a <= b ? a : b;
    case BinaryOp::Eq:
      return a == b ? 1.0f : 0.0f;
  }
  return 0.0f;
}

// out[i] = f(in0[i], in1[i], ...) over broadcast strided operands.
template <typename T, int N, typename F>
void map_n(Tensor& out, const std::array<const Tensor*, N>& in, F f) {
  T* op = static_cast<T*>(out.raw_data());
  std::array<const T*, N> ip;
  std::array<Shape, N + 1> st;
  st[0] = out.strides();
  for (int k = 0; k < N; ++k) {
    ip[k] = static_cast<const T*>(in[k]->raw_data());
    st[k + 1] = broadcast_strides(*in[k], out.sizes());
  }
  strided_for_each<N + 1>(
      out.sizes(), st, [&](std::array<int64_t, N + 1> o, int64_t n, std::array<int64_t, N + 1> s) {
        T* dst = op + o[0];
        bool dense = s[0] == 1;
        for (int k = 0; k < N; ++k) dense = dense && s[k + 1] == 1;
        if (dense) {
          if constexpr (N == 1) {
            const T* a = ip[0] + o[1];
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) dst[i] = store_f32<T>(f(load_f32(a[i])));
          } else if constexpr (N == 2) {
            const T* a = ip[0] + o[1];
            const T* b = ip[1] + o[2];
#pragma omp simd
            for (int64_t i = 0; i < n; ++i)
              dst[i] = store_f32<T>(f(load_f32(a[i]), load_f32(b[i])));
          } else {
            const T* a = ip[0] + o[1];
            const T* b = ip[1] + o[2];
            const T* c = ip[2] + o[3];
#pragma omp simd
            for (int64_t i = 0; i < n; ++i)
              dst[i] = store_f32<T>(f(load_f32(a[i]), load_f32(b[i]), load_f32(c[i])));
          }
        } else {
          for (int64_t i = 0; i < n; ++i) {
            if constexpr (N == 1) {
              dst[i * s[0]] = store_f32<T>(f(load_f32(ip[0][o[1] + i * s[1]])));
            } else if constexpr (N == 2) {
              dst[i * s[0]] = store_f32<T>(
                  f(load_f32(ip[0][o[1] + i * s[1]]), load_f32(ip[1][o[2] + i * s[2]])));
            } else {
              dst[i * s[0]] =
                  store_f32<T>(f(load_f32(ip[0][o[1] + i * s[1]]), load_f32(ip[1][o[2] + i * s[2]]),
                                 load_f32(ip[2][o[3] + i * s[3]])));
            }
          }
        }
      });
}

// Dispatches a functor on float over the tensor's floating dtype. Each op is
// a separate template instance so the switch inside the functor folds away.
template <int N, typename F>
void map_float(const char* what, Tensor& out, const std::array<const Tensor*, N>& in, F f) {
  KEEL_DISPATCH_FLOAT(out.dtype(), what, map_n<T, N>(out, in, f));
}

template <UnaryOp Op>
void unary_t(const Tensor& x, Tensor& out) {
  map_float<1>(unary_name(Op), out, {&x}, [](float v) { return apply_unary(Op, v); });
}

template <UnaryOp Op>
void unary_backward_t(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx) {
  map_float<3>(unary_name(Op), dx, {&x, &y, &dy},
               [](float xv, float yv, float g) { return g * unary_derivative(Op, xv, yv); });
}

template <BinaryOp Op>
void binary_t(const Tensor& a, const Tensor& b, Tensor& out) {
  map_float<2>(binary_name(Op), out, {&a, &b},
               [](float u, float v) { return apply_binary(Op, u, v); });
}

template <BinaryOp Op>
void binary_scalar_t(const Tensor& a, float s, bool first, Tensor& out) {
  if (first)
    map_float<1>(binary_name(Op), out, {&a}, [s](float v) { return apply_binary(Op, s, v); });
  else
    map_float<1>(binary_name(Op), out, {&a}, [s](float v) { return apply_binary(Op, v, s); });
}

#define KEEL_UNARY_CASES(M)                                                                 \
  M(Neg)                                                                                    \
  M(Exp) M(Log) M(Sqrt) M(Rsqrt) M(Tanh) M(Sigmoid) M(Silu) M(Softplus) M(Gelu) M(GeluTanh) \
      M(Relu) M(Abs) M(Square) M(Sin)
#define KEEL_BINARY_CASES(M) M(Add) M(Sub) M(Mul) M(Div) M(Pow) M(Max) M(Min) M(Eq)

}  // namespace

namespace cpu {

void unary(UnaryOp op, const Tensor& x, Tensor& out) {
  switch (op) {
#define M(NAME)                     \
  case UnaryOp::NAME:               \
    unary_t<UnaryOp::NAME>(x, out); \
    break;
    KEEL_UNARY_CASES(M)
#undef M
  }
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx) {
  switch (op) {
#define M(NAME)                                    \
  case UnaryOp::NAME:                              \
    unary_backward_t<UnaryOp::NAME>(x, y, dy, dx); \
    break;
    KEEL_UNARY_CASES(M)
#undef M
  }
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  switch (op) {
#define M(NAME)                          \
  case BinaryOp::NAME:                   \
    binary_t<BinaryOp::NAME>(a, b, out); \
    break;
    KEEL_BINARY_CASES(M)
#undef M
  }
}

void binary_scalar(BinaryOp op, const Tensor& a, double s, bool first, Tensor& out) {
  switch (op) {
#define M(NAME)                                               \
  case BinaryOp::NAME:                                        \
    binary_scalar_t<BinaryOp::NAME>(a, float(s), first, out); \
    break;
    KEEL_BINARY_CASES(M)
#undef M
  }
}

void axpby(float alpha, const Tensor& a, float beta, const Tensor& b, Tensor& out) {
  map_float<2>("axpby", out, {&a, &b},
               [alpha, beta](float u, float v) { return alpha * u + beta * v; });
}

}  // namespace cpu
}  // namespace keel::kernels
