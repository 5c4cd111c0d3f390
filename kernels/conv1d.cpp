// Causal conv1d launchers: validate, allocate, dispatch by device.
#include "kernels/conv1d.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y);
void causal_conv1d_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dx,
                            Tensor* dweight, Tensor* dbias);
}  // namespace cpu

namespace cuda {
void causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y);
void causal_conv1d_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dx,
                            Tensor* dweight, Tensor* dbias);
}  // namespace cuda

namespace {

void check_conv(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  KEEL_CHECK(x.dim() == 3, op, ": x must be (B, C, T), got ", x.describe());
  KEEL_CHECK(weight.dim() == 2, op, ": weight must be (C, K), got ", weight.describe());
  KEEL_CHECK(weight.size(0) == x.size(1), op, ": weight ", weight.shape_string(),
             " must have one filter per channel of x ", x.shape_string(), " (C = ", x.size(1), ")");
  KEEL_CHECK(weight.size(1) >= 1, op, ": weight ", weight.shape_string(),
             " needs at least one tap (K >= 1)");
  check_floating(op, x, "x");
  KEEL_CHECK(weight.dtype() == x.dtype(), op, ": dtypes differ (x ", x.describe(), ", weight ",
             weight.describe(), ")");
  if (bias.defined()) {
    KEEL_CHECK(bias.dim() == 1 && bias.size(0) == x.size(1), op, ": bias must be (C) = (",
               x.size(1), ") for x ", x.shape_string(), ", got ", bias.shape_string());
    KEEL_CHECK(bias.dtype() == x.dtype(), op, ": dtypes differ (x ", x.describe(), ", bias ",
               bias.describe(), ")");
  }
  check_devices(op, x.device(), {&weight, &bias});
}

}  // namespace

Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_conv("causal_conv1d", x, weight, bias);
  Tensor y = empty(x.sizes(), x.dtype(), x.device());  // (B, C, T)
  on_device(
      "causal_conv1d", x.device(), [&] { cpu::causal_conv1d(x, weight, bias, y); },
      [&] { cuda::causal_conv1d(x, weight, bias, y); });
  return y;
}

CausalConv1dGrads causal_conv1d_backward(const Tensor& x, const Tensor& weight, const Tensor& dy,
                                         bool need_dx, bool need_dweight, bool need_dbias) {
  const char* op = "causal_conv1d backward";
  check_conv(op, x, weight, Tensor());
  KEEL_CHECK(dy.sizes() == x.sizes(), op, ": dy ", dy.shape_string(), " must match x ",
             x.shape_string());
  check_floating(op, dy, "dy");
  check_devices(op, x.device(), {&dy});
  // The CPU kernel reads dy through x's element type: a copy only if they differ.
  Tensor g = dy.dtype() == x.dtype() ? dy : dy.to(x.dtype());  // (B, C, T)
  CausalConv1dGrads out;
  if (need_dx) out.dx = empty(x.sizes(), x.dtype(), x.device());                      // (B, C, T)
  if (need_dweight) out.dweight = empty(weight.sizes(), weight.dtype(), x.device());  // (C, K)
  if (need_dbias) out.dbias = empty({x.size(1)}, weight.dtype(), x.device());         // (C)
  if (!need_dx && !need_dweight && !need_dbias) return out;
  Tensor* dx = need_dx ? &out.dx : nullptr;
  Tensor* dw = need_dweight ? &out.dweight : nullptr;
  Tensor* db = need_dbias ? &out.dbias : nullptr;
  on_device(
      op, x.device(), [&] { cpu::causal_conv1d_backward(x, weight, g, dx, dw, db); },
      [&] { cuda::causal_conv1d_backward(x, weight, g, dx, dw, db); });
  return out;
}

}  // namespace keel::kernels
