// RMSNorm launchers: validate shapes, dtypes and devices, make the row data
// contiguous, hand the kernel an f32 copy of the (C)-sized weight, dispatch
// by device.
#include "kernels/rmsnorm.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
// x, y contiguous (R, C); w (C) f32; rstd (R) f32.
void rmsnorm(const Tensor& x, const float* w, float eps, Tensor& y, float* rstd);
// dx (R, C) or undefined; dw (C) or null.
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const float* w, const float* rstd,
                      Tensor& dx, float* dw);
}  // namespace cpu

namespace cuda {
void rmsnorm(const Tensor& x, const float* w, float eps, Tensor& y, float* rstd);
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const float* w, const float* rstd,
                      Tensor& dx, float* dw);
}  // namespace cuda

namespace {

constexpr const char* kOp = "rmsnorm";

Shape leading_shape(const Tensor& x) { return Shape(x.sizes().begin(), x.sizes().end() - 1); }

void check_input(const Tensor& x, const Tensor& weight) {
  check_floating(kOp, x, "input");
  KEEL_CHECK(x.dim() >= 1 && x.size(-1) > 0, kOp,
             ": input needs a non-empty last dim to normalise over, got ", x.describe());
  KEEL_CHECK(weight.defined(), kOp, ": weight is undefined for input ", x.describe());
  check_floating(kOp, weight, "weight");
  KEEL_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), kOp,
             ": weight must be (C,) = (", x.size(-1), ",) for input ", x.describe(), ", got ",
             weight.describe());
  check_devices(kOp, x.device(), {&weight});
}

}  // namespace

RmsNormOut rmsnorm(const Tensor& x, const Tensor& weight, double eps) {
  check_input(x, weight);
  KEEL_CHECK(eps >= 0.0, kOp, ": eps must be >= 0, got ", eps);
  // Rows are read as one flat (R, C) block.
  Tensor xc = x.contiguous();
  Tensor w = weight.to(DType::F32).contiguous();  // (C)
  RmsNormOut out;
  out.y = empty(x.sizes(), x.dtype(), x.device());             // (..., C)
  out.rstd = empty(leading_shape(x), DType::F32, x.device());  // (...)
  if (x.numel() == 0) return out;
  on_device(
      kOp, x.device(),
      [&] { cpu::rmsnorm(xc, w.data<float>(), float(eps), out.y, out.rstd.data<float>()); },
      [&] { cuda::rmsnorm(xc, w.data<float>(), float(eps), out.y, out.rstd.data<float>()); });
  return out;
}

RmsNormGrads rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                              const Tensor& rstd, bool need_dx, bool need_dweight) {
  check_input(x, weight);
  check_devices(kOp, x.device(), {&dy, &rstd});
  KEEL_CHECK(dy.sizes() == x.sizes() && dy.dtype() == x.dtype(), kOp, " backward: gradient ",
             dy.describe(), " does not match input ", x.describe());
  KEEL_CHECK(rstd.dtype() == DType::F32 && rstd.sizes() == leading_shape(x), kOp,
             " backward: rstd must be f32 ", shape_str(leading_shape(x)), " for input ",
             x.describe(), ", got ", rstd.describe());
  const int64_t C = x.size(-1);
  Tensor xc = x.contiguous(), dyc = dy.contiguous(), r = rstd.contiguous();
  Tensor w = weight.to(DType::F32).contiguous();  // (C)
  RmsNormGrads g;
  if (need_dx) g.dx = empty(x.sizes(), x.dtype(), x.device());      // (..., C)
  if (need_dweight) g.dweight = zeros({C}, DType::F32, x.device());  // (C)
  if (x.numel() == 0 || (!need_dx && !need_dweight)) return g;
  float* dw = g.dweight.defined() ? g.dweight.data<float>() : nullptr;
  on_device(
      kOp, x.device(),
      [&] { cpu::rmsnorm_backward(dyc, xc, w.data<float>(), r.data<float>(), g.dx, dw); },
      [&] { cuda::rmsnorm_backward(dyc, xc, w.data<float>(), r.data<float>(), g.dx, dw); });
  return g;
}

}  // namespace keel::kernels
