// Differentiable fused LayerNorm over the last dim. The node saves x, the
// weight and the forward's per-row mean and rstd (f32); the output is not
// kept. Parameter gradients are returned in each parameter's own dtype.
#include "autograd/ops.h"
#include "kernels/layernorm.h"

namespace keel {

Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  kernels::LayerNormOut out = kernels::layernorm(x, weight, bias, eps);
  if (!any_requires_grad({x, weight, bias})) return out.y;
  Tensor xs = x.detach(), ws = weight.detach();
  Tensor mean = out.mean, rstd = out.rstd;  // (...) f32
  const bool has_bias = bias.defined();
  const DType w_dtype = weight.dtype(), b_dtype = has_bias ? bias.dtype() : DType::F32;
  record("layernorm", {x, weight, bias}, {out.y},
         [xs, ws, mean, rstd, has_bias, w_dtype, b_dtype](BackwardCtx& c) {
           const bool need_b = has_bias && c.needs(2);
           kernels::LayerNormGrads g = kernels::layernorm_backward(
               c.grad(), xs, ws, mean, rstd, need_b, c.needs(0), c.needs(1) || need_b);
           Tensor dw = c.needs(1) ? g.dweight.to(w_dtype) : Tensor();
           Tensor db = need_b ? g.dbias.to(b_dtype) : Tensor();
           return std::vector<Tensor>{g.dx, dw, db};
         });
  return out.y;
}

}  // namespace keel
