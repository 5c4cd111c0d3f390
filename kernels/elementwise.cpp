// Elementwise launchers: validate, allocate, dispatch by device.
#include "kernels/elementwise.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void unary(UnaryOp op, const Tensor& x, Tensor& out);
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
void binary_scalar(BinaryOp op, const Tensor& a, double s, bool first, Tensor& out);
void axpby(float alpha, const Tensor& a, float beta, const Tensor& b, Tensor& out);
}  // namespace cpu

namespace cuda {
void unary(UnaryOp op, const Tensor& x, Tensor& out);
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
void binary_scalar(BinaryOp op, const Tensor& a, double s, bool first, Tensor& out);
void axpby(float alpha, const Tensor& a, float beta, const Tensor& b, Tensor& out);
}  // namespace cuda

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg:
      return "neg";
    case UnaryOp::Exp:
      return "exp";
    case UnaryOp::Log:
      return "log";
    case UnaryOp::Sqrt:
      return "sqrt";
    case UnaryOp::Rsqrt:
      return "rsqrt";
    case UnaryOp::Tanh:
      return "tanh";
    case UnaryOp::Sigmoid:
      return "sigmoid";
    case UnaryOp::Silu:
      return "silu";
    case UnaryOp::Softplus:
      return "softplus";
    case UnaryOp::Gelu:
      return "gelu";
    case UnaryOp::GeluTanh:
      return "gelu_tanh";
    case UnaryOp::Relu:
      return "relu";
    case UnaryOp::Abs:
      return "abs";
    case UnaryOp::Square:
      return "square";
    case UnaryOp::Sin:
      return "sin";
  }
  return "?";
}

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add:
      return "add";
    case BinaryOp::Sub:
      return "sub";
    case BinaryOp::Mul:
      return "mul";
    case BinaryOp::Div:
      return "div";
    case BinaryOp::Pow:
      return "pow";
    case BinaryOp::Max:
      return "maximum";
    case BinaryOp::Min:
      return "minimum";
    case BinaryOp::Eq:
      return "eq";
  }
  return "?";
}

Shape broadcast_shape(const Tensor& a, const Tensor& b, const char* op) {
  return broadcast_shapes(a.sizes(), b.sizes(), op);
}

static void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  check_same_device(a, b, op);
  check_floating(op, a, "lhs");
  KEEL_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ (", a.describe(), " and ", b.describe(),
             ")");
}

Tensor unary(UnaryOp op, const Tensor& x) {
  check_floating(unary_name(op), x, "input");
  Tensor out = empty(x.sizes(), x.dtype(), x.device());
  on_device(
      unary_name(op), x.device(), [&] { cpu::unary(op, x, out); },
      [&] { cuda::unary(op, x, out); });
  return out;
}

Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy) {
  check_floating(unary_name(op), dy, "grad");
  KEEL_CHECK(x.sizes() == dy.sizes() && y.sizes() == dy.sizes(), unary_name(op),
             " backward: shapes differ: x ", x.shape_string(), ", y ", y.shape_string(), ", dy ",
             dy.shape_string());
  Tensor dx = empty(x.sizes(), x.dtype(), x.device());
  on_device(
      unary_name(op), x.device(), [&] { cpu::unary_backward(op, x, y, dy, dx); },
      [&] { cuda::unary_backward(op, x, y, dy, dx); });
  return dx;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  check_pair(binary_name(op), a, b);
  Tensor out = empty(broadcast_shape(a, b, binary_name(op)), a.dtype(), a.device());
  on_device(
      binary_name(op), a.device(), [&] { cpu::binary(op, a, b, out); },
      [&] { cuda::binary(op, a, b, out); });
  return out;
}

Tensor binary_scalar(BinaryOp op, const Tensor& a, double s, bool scalar_first) {
  check_floating(binary_name(op), a, "input");
  Tensor out = empty(a.sizes(), a.dtype(), a.device());
  on_device(
      binary_name(op), a.device(), [&] { cpu::binary_scalar(op, a, s, scalar_first, out); },
      [&] { cuda::binary_scalar(op, a, s, scalar_first, out); });
  return out;
}

Tensor axpby(double alpha, const Tensor& a, double beta, const Tensor& b) {
  check_pair("axpby", a, b);
  Tensor out = empty(broadcast_shape(a, b, "axpby"), a.dtype(), a.device());
  on_device(
      "axpby", a.device(), [&] { cpu::axpby(float(alpha), a, float(beta), b, out); },
      [&] { cuda::axpby(float(alpha), a, float(beta), b, out); });
  return out;
}

void add_(Tensor& dst, const Tensor& src, double alpha) {
  check_pair("add_", dst, src);
  KEEL_CHECK(broadcast_shape(dst, src, "add_") == dst.sizes(), "add_: cannot add ", src.describe(),
             " into ", dst.describe());
  // Writing into dst while reading it elementwise at the same index is safe.
  on_device(
      "add_", dst.device(), [&] { cpu::axpby(1.0f, dst, float(alpha), src, dst); },
      [&] { cuda::axpby(1.0f, dst, float(alpha), src, dst); });
}

void mul_scalar_(Tensor& dst, double s) {
  check_floating("mul_scalar_", dst, "input");
  on_device(
      "mul_scalar_", dst.device(), [&] { cpu::binary_scalar(BinaryOp::Mul, dst, s, false, dst); },
      [&] { cuda::binary_scalar(BinaryOp::Mul, dst, s, false, dst); });
}

}  // namespace keel::kernels
