// Differentiable softmax and log-softmax. Both backward passes need only the
// output y, so the node saves y and not x.
#include "autograd/ops.h"
#include "kernels/softmax.h"

namespace keel {

Tensor softmax(const Tensor& x, int64_t dim) {
  Tensor y = kernels::softmax(x, dim);  // same shape as x
  if (any_requires_grad({x})) {
    Tensor ys = y.detach();
    record("softmax", {x}, {y}, [ys, dim](BackwardCtx& c) {
      return std::vector<Tensor>{kernels::softmax_backward(ys, c.grad(), dim)};
    });
  }
  return y;
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  Tensor y = kernels::log_softmax(x, dim);  // same shape as x
  if (any_requires_grad({x})) {
    Tensor ys = y.detach();
    record("log_softmax", {x}, {y}, [ys, dim](BackwardCtx& c) {
      return std::vector<Tensor>{kernels::log_softmax_backward(ys, c.grad(), dim)};
    });
  }
  return y;
}

}  // namespace keel
