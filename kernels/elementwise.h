// Elementwise kernels with broadcasting: unary maps, binary ops, scalar ops,
// and the fused derivative of each unary map. Inputs may be strided or
// broadcast views; nothing is copied. bf16/f16 are loaded as f32 and rounded
// on store.
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

enum class UnaryOp {
  Neg,
  Exp,
  Log,
  Sqrt,
  Rsqrt,
  Tanh,
  Sigmoid,
  Silu,
  Softplus,
  Gelu,
  GeluTanh,
  Relu,
  Abs,
  Square,
  Sin
};
// Eq yields 1 where a == b, else 0 (masks for gradients; not differentiable).
enum class BinaryOp { Add, Sub, Mul, Div, Pow, Max, Min, Eq };

const char* unary_name(UnaryOp op);
const char* binary_name(BinaryOp op);

// y = f(x)
Tensor unary(UnaryOp op, const Tensor& x);
// dx = dy * f'(x); y = f(x) is passed too, as some derivatives are cheaper from it.
Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy);

// out = a (op) b, broadcast; a and b share a dtype.
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
// out = a (op) s, or s (op) a when `scalar_first`.
Tensor binary_scalar(BinaryOp op, const Tensor& a, double s, bool scalar_first = false);
// out = alpha * a + beta * b (broadcast), one pass.
Tensor axpby(double alpha, const Tensor& a, double beta, const Tensor& b);

// In place: dst += alpha * src (src broadcast to dst's shape).
void add_(Tensor& dst, const Tensor& src, double alpha = 1.0);
// In place: dst *= s.
void mul_scalar_(Tensor& dst, double s);

// Output shape of a broadcasting op (throws keel::Error naming both shapes).
Shape broadcast_shape(const Tensor& a, const Tensor& b, const char* op);

}  // namespace keel::kernels
