// Differentiable depthwise causal conv1d. The node keeps x (for the weight
// gradient) and the weight (for the input gradient); the bias gradient needs
// only the output gradient.
#include "kernels/conv1d.h"

#include "autograd/ops.h"

namespace keel {

Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  Tensor y = kernels::causal_conv1d(x, weight, bias);
  if (any_requires_grad({x, weight, bias})) {
    Tensor xs = x.detach(), ws = weight.detach();
    record("causal_conv1d", {x, weight, bias}, {y}, [xs, ws](BackwardCtx& c) {
      kernels::CausalConv1dGrads g =
          kernels::causal_conv1d_backward(xs, ws, c.grad(), c.needs(0), c.needs(1), c.needs(2));
      return std::vector<Tensor>{g.dx, g.dweight, g.dbias};
    });
  }
  return y;
}

}  // namespace keel
