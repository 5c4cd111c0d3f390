// Differentiable embedding lookup: the gradient of the weight is a
// deterministic scatter-add of the output gradient rows at the ids (repeated
// ids sum); ids get no gradient.
#include "autograd/ops.h"
#include "kernels/embedding.h"

namespace keel {

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  Tensor y = kernels::embedding(weight, ids);
  if (!any_requires_grad({weight})) return y;
  Tensor saved_ids = ids.detach();
  TensorMeta w = TensorMeta::of(weight);
  record("embedding", {weight}, {y}, [saved_ids, w](BackwardCtx& c) {
    Tensor dw = zeros(w.sizes, w.dtype, w.device);  // (V, C)
    kernels::embedding_backward(c.grad(), saved_ids, dw);
    return std::vector<Tensor>{dw};
  });
  return y;
}

}  // namespace keel
