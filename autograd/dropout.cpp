// Differentiable dropout. The node saves only (p, seed, offset): backward
// regenerates the mask from the Philox stream rather than storing it.
#include "kernels/dropout.h"

#include "autograd/ops.h"

namespace keel {

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  // A bad p is a config error even where dropout is inactive (eval, p = 0).
  KEEL_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p, " for ", x.describe());
  if (!training || p == 0.0) return x;
  const uint64_t seed = gen.seed(), offset = gen.next_offset();
  Tensor y = kernels::dropout(x, p, seed, offset);
  record("dropout", {x}, {y}, [p, seed, offset](BackwardCtx& c) {
    return std::vector<Tensor>{kernels::dropout_backward(c.grad(), p, seed, offset)};
  });
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training) {
  return dropout(x, p, training, default_generator());
}

}  // namespace keel
