// Differentiable elementwise ops. Binary ops reduce their gradients back to
// each operand's shape (the inverse of broadcasting).
#include "kernels/elementwise.h"

#include <cmath>

#include "autograd/ops.h"
#include "kernels/reduce.h"

namespace keel {

using kernels::BinaryOp;
using kernels::UnaryOp;

namespace {

Tensor unary_op(UnaryOp op, const Tensor& x) {
  Tensor y = kernels::unary(op, x);
  if (any_requires_grad({x})) {
    Tensor xs = x.detach(), ys = y.detach();
    record(kernels::unary_name(op), {x}, {y}, [op, xs, ys](BackwardCtx& c) {
      return std::vector<Tensor>{kernels::unary_backward(op, xs, ys, c.grad())};
    });
  }
  return y;
}

Tensor mulk(const Tensor& a, const Tensor& b) { return kernels::binary(BinaryOp::Mul, a, b); }

Tensor binary_op(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor y = kernels::binary(op, a, b);
  if (!any_requires_grad({a, b})) return y;
  Tensor as = a.detach(), bs = b.detach(), ys = y.detach();
  record(kernels::binary_name(op), {a, b}, {y}, [op, as, bs, ys](BackwardCtx& c) {
    const Tensor& g = c.grad();
    Tensor ga, gb;
    switch (op) {
      case BinaryOp::Eq:
        break;  // a mask: no gradient
      case BinaryOp::Add:
        if (c.needs(0)) ga = g;
        if (c.needs(1)) gb = g;
        break;
      case BinaryOp::Sub:
        if (c.needs(0)) ga = g;
        if (c.needs(1)) gb = kernels::unary(UnaryOp::Neg, g);
        break;
      case BinaryOp::Mul:
        if (c.needs(0)) ga = mulk(g, bs);
        if (c.needs(1)) gb = mulk(g, as);
        break;
      case BinaryOp::Div:
        if (c.needs(0)) ga = kernels::binary(BinaryOp::Div, g, bs);
        // d(a/b)/db = -y / b
        if (c.needs(1))
          gb = kernels::unary(UnaryOp::Neg, kernels::binary(BinaryOp::Div, mulk(g, ys), bs));
        break;
      case BinaryOp::Pow:
        // d/da = b * a^(b-1) = b * y / a is unsafe at a = 0, so use pow directly.
        if (c.needs(0))
          ga = mulk(g, mulk(bs, kernels::binary(BinaryOp::Pow, as,
                                                kernels::binary_scalar(BinaryOp::Sub, bs, 1.0))));
        if (c.needs(1)) gb = mulk(g, mulk(ys, kernels::unary(UnaryOp::Log, as)));
        break;
      case BinaryOp::Max:
      case BinaryOp::Min: {
        // The gradient goes to the operand that was selected (a on ties).
        Tensor is_a = kernels::binary(BinaryOp::Eq, as, ys);
        if (c.needs(0)) ga = mulk(g, is_a);
        if (c.needs(1)) gb = mulk(g, kernels::binary_scalar(BinaryOp::Sub, is_a, 1.0, true));
        break;
      }
    }
    if (ga.defined()) ga = kernels::sum_to(ga, as.sizes());
    if (gb.defined()) gb = kernels::sum_to(gb, bs.sizes());
    return std::vector<Tensor>{ga, gb};
  });
  return y;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Div, a, b); }
Tensor pow(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Pow, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Max, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Min, a, b); }

Tensor pow(const Tensor& a, double e) {
  Tensor y = kernels::binary_scalar(BinaryOp::Pow, a, e);
  if (any_requires_grad({a})) {
    Tensor as = a.detach();
    record("pow_scalar", {a}, {y}, [as, e](BackwardCtx& c) {
      Tensor d = kernels::binary_scalar(BinaryOp::Mul,
                                        kernels::binary_scalar(BinaryOp::Pow, as, e - 1.0), e);
      return std::vector<Tensor>{mulk(c.grad(), d)};
    });
  }
  return y;
}

Tensor add_scalar(const Tensor& a, double s) {
  Tensor y = kernels::binary_scalar(BinaryOp::Add, a, s);
  record("add_scalar", {a}, {y}, [](BackwardCtx& c) { return std::vector<Tensor>{c.grad()}; });
  return y;
}

Tensor mul_scalar(const Tensor& a, double s) {
  Tensor y = kernels::binary_scalar(BinaryOp::Mul, a, s);
  record("mul_scalar", {a}, {y}, [s](BackwardCtx& c) {
    return std::vector<Tensor>{kernels::binary_scalar(BinaryOp::Mul, c.grad(), s)};
  });
  return y;
}

Tensor rsub_scalar(double s, const Tensor& a) {
  Tensor y = kernels::binary_scalar(BinaryOp::Sub, a, s, true);
  record("rsub_scalar", {a}, {y}, [](BackwardCtx& c) {
    return std::vector<Tensor>{kernels::unary(UnaryOp::Neg, c.grad())};
  });
  return y;
}

Tensor rdiv_scalar(double s, const Tensor& a) {
  Tensor y = kernels::binary_scalar(BinaryOp::Div, a, s, true);
  if (any_requires_grad({a})) {
    Tensor as = a.detach(), ys = y.detach();
    // d(s/a)/da = -y / a
    record("rdiv_scalar", {a}, {y}, [as, ys](BackwardCtx& c) {
      Tensor d = kernels::binary(BinaryOp::Div, mulk(c.grad(), ys), as);
      return std::vector<Tensor>{kernels::unary(UnaryOp::Neg, d)};
    });
  }
  return y;
}

Tensor neg(const Tensor& x) { return unary_op(UnaryOp::Neg, x); }
Tensor exp(const Tensor& x) { return unary_op(UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary_op(UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary_op(UnaryOp::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary_op(UnaryOp::Rsqrt, x); }
Tensor tanh(const Tensor& x) { return unary_op(UnaryOp::Tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary_op(UnaryOp::Sigmoid, x); }
Tensor silu(const Tensor& x) { return unary_op(UnaryOp::Silu, x); }
Tensor softplus(const Tensor& x) { return unary_op(UnaryOp::Softplus, x); }
Tensor gelu(const Tensor& x) { return unary_op(UnaryOp::Gelu, x); }
Tensor gelu_tanh(const Tensor& x) { return unary_op(UnaryOp::GeluTanh, x); }
Tensor relu(const Tensor& x) { return unary_op(UnaryOp::Relu, x); }
Tensor abs(const Tensor& x) { return unary_op(UnaryOp::Abs, x); }
Tensor square(const Tensor& x) { return unary_op(UnaryOp::Square, x); }
Tensor sin(const Tensor& x) { return unary_op(UnaryOp::Sin, x); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator+(const Tensor& a, double s) { return add_scalar(a, s); }
Tensor operator-(const Tensor& a, double s) { return add_scalar(a, -s); }
Tensor operator*(const Tensor& a, double s) { return mul_scalar(a, s); }
Tensor operator/(const Tensor& a, double s) { return mul_scalar(a, 1.0 / s); }
Tensor operator+(double s, const Tensor& a) { return add_scalar(a, s); }
Tensor operator-(double s, const Tensor& a) { return rsub_scalar(s, a); }
Tensor operator*(double s, const Tensor& a) { return mul_scalar(a, s); }
Tensor operator/(double s, const Tensor& a) { return rdiv_scalar(s, a); }

}  // namespace keel
