// Differentiable fused RMSNorm over the last dim. The node saves x, the
// weight and the forward's per-row rstd (f32); the output is not kept. The
// weight gradient is returned in the weight's own dtype.
#include "autograd/ops.h"
#include "kernels/rmsnorm.h"

namespace keel {

Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps) {
  kernels::RmsNormOut out = kernels::rmsnorm(x, weight, eps);
  if (!any_requires_grad({x, weight})) return out.y;
  Tensor xs = x.detach(), ws = weight.detach();
  Tensor rstd = out.rstd;  // (...) f32
  const DType w_dtype = weight.dtype();
  record("rmsnorm", {x, weight}, {out.y}, [xs, ws, rstd, w_dtype](BackwardCtx& c) {
    kernels::RmsNormGrads g =
        kernels::rmsnorm_backward(c.grad(), xs, ws, rstd, c.needs(0), c.needs(1));
    Tensor dw = c.needs(1) ? g.dweight.to(w_dtype) : Tensor();
    return std::vector<Tensor>{g.dx, dw};
  });
  return out.y;
}

}  // namespace keel
