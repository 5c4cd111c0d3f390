// LayerNorm launchers: validate shapes, dtypes and devices, make the row
// data contiguous, hand the kernel f32 copies of the (C)-sized parameters,
// dispatch by device.
#include "kernels/layernorm.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
// x, y contiguous (R, C); w, b (C) f32 (b may be null); mean, rstd (R) f32.
void layernorm(const Tensor& x, const float* w, const float* b, float eps, Tensor& y, float* mean,
               float* rstd);
// dx (R, C) or undefined; dw, db (C) or null.
void layernorm_backward(const Tensor& dy, const Tensor& x, const float* w, const float* mean,
                        const float* rstd, Tensor& dx, float* dw, float* db);
}  // namespace cpu

namespace cuda {
void layernorm(const Tensor& x, const float* w, const float* b, float eps, Tensor& y, float* mean,
               float* rstd);
void layernorm_backward(const Tensor& dy, const Tensor& x, const float* w, const float* mean,
                        const float* rstd, Tensor& dx, float* dw, float* db);
}  // namespace cuda

namespace {

constexpr const char* kOp = "layernorm";

Shape leading_shape(const Tensor& x) { return Shape(x.sizes().begin(), x.sizes().end() - 1); }

void check_param(const Tensor& x, const Tensor& p, const char* name) {
  check_floating(kOp, p, name);
  KEEL_CHECK(p.dim() == 1 && p.size(0) == x.size(-1), kOp, ": ", name, " must be (C,) = (",
             x.size(-1), ",) for input ", x.describe(), ", got ", p.describe());
}

void check_input(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_floating(kOp, x, "input");
  KEEL_CHECK(x.dim() >= 1 && x.size(-1) > 0, kOp,
             ": input needs a non-empty last dim to normalise over, got ", x.describe());
  KEEL_CHECK(weight.defined(), kOp, ": weight is undefined for input ", x.describe());
  check_param(x, weight, "weight");
  if (bias.defined()) check_param(x, bias, "bias");
  check_devices(kOp, x.device(), {&weight, &bias});
}

void check_stats(const Tensor& x, const Tensor& stat, const char* name) {
  KEEL_CHECK(stat.dtype() == DType::F32 && stat.sizes() == leading_shape(x), kOp, " backward: ",
             name, " must be f32 ", shape_str(leading_shape(x)), " for input ", x.describe(),
             ", got ", stat.describe());
}

}  // namespace

LayerNormOut layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_input(x, weight, bias);
  KEEL_CHECK(eps >= 0.0, kOp, ": eps must be >= 0, got ", eps);
  // Rows are read as one flat (R, C) block.
  Tensor xc = x.contiguous();
  Tensor w = weight.to(DType::F32).contiguous();                            // (C)
  Tensor b = bias.defined() ? bias.to(DType::F32).contiguous() : Tensor();  // (C) or none
  LayerNormOut out;
  out.y = empty(x.sizes(), x.dtype(), x.device());             // (..., C)
  out.mean = empty(leading_shape(x), DType::F32, x.device());  // (...)
  out.rstd = empty(leading_shape(x), DType::F32, x.device());  // (...)
  if (x.numel() == 0) return out;
  on_device(
      kOp, x.device(),
      [&] {
        cpu::layernorm(xc, w.data<float>(), b.defined() ? b.data<float>() : nullptr, float(eps),
                       out.y, out.mean.data<float>(), out.rstd.data<float>());
      },
      [&] {
        cuda::layernorm(xc, w.data<float>(), b.defined() ? b.data<float>() : nullptr, float(eps),
                        out.y, out.mean.data<float>(), out.rstd.data<float>());
      });
  return out;
}

LayerNormGrads layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                  const Tensor& mean, const Tensor& rstd, bool has_bias,
                                  bool need_dx, bool need_dparams) {
  check_input(x, weight, Tensor());
  check_devices(kOp, x.device(), {&dy, &mean, &rstd});
  KEEL_CHECK(dy.sizes() == x.sizes() && dy.dtype() == x.dtype(), kOp,
             " backward: gradient ", dy.describe(), " does not match input ", x.describe());
  check_stats(x, mean, "mean");
  check_stats(x, rstd, "rstd");
  const int64_t C = x.size(-1);
  Tensor xc = x.contiguous(), dyc = dy.contiguous();
  Tensor w = weight.to(DType::F32).contiguous();  // (C)
  Tensor m = mean.contiguous(), r = rstd.contiguous();
  LayerNormGrads g;
  if (need_dx) g.dx = empty(x.sizes(), x.dtype(), x.device());  // (..., C)
  if (need_dparams) {
    g.dweight = zeros({C}, DType::F32, x.device());                // (C)
    if (has_bias) g.dbias = zeros({C}, DType::F32, x.device());  // (C)
  }
  if (x.numel() == 0 || (!need_dx && !need_dparams)) return g;
  float* dw = g.dweight.defined() ? g.dweight.data<float>() : nullptr;
  float* db = g.dbias.defined() ? g.dbias.data<float>() : nullptr;
  on_device(
      kOp, x.device(),
      [&] {
        cpu::layernorm_backward(dyc, xc, w.data<float>(), m.data<float>(), r.data<float>(), g.dx,
                                dw, db);
      },
      [&] {
        cuda::layernorm_backward(dyc, xc, w.data<float>(), m.data<float>(), r.data<float>(), g.dx,
                                 dw, db);
      });
  return g;
}

}  // namespace keel::kernels
