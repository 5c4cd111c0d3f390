#include "nn/layers.h"

#include "parallel/collectives.h"

namespace keel::nn {

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen, double init_std) {
  KEEL_CHECK(in > 0 && out > 0, "Linear: sizes must be positive, got in=", in, " out=", out);
  weight = register_parameter("weight", init_normal({out, in}, init_std, gen),  // (out, in)
                              /*weight_decay=*/true);
  if (has_bias) bias = register_parameter("bias", zeros({out}));  // (out)
}

Embedding::Embedding(int64_t num, int64_t dim, Generator& gen, double init_std) {
  KEEL_CHECK(num > 0 && dim > 0, "Embedding: sizes must be positive, got ", num, "x", dim);
  weight = register_parameter("weight", init_normal({num, dim}, init_std, gen));  // (num, dim)
}

LayerNorm::LayerNorm(int64_t dim, bool has_bias, double eps) : eps_(eps) {
  weight = register_parameter("weight", ones({dim}));
  if (has_bias) bias = register_parameter("bias", zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x) const {
  if (!sequence_tp_) return layernorm(x, weight, bias, eps_);
  // Identity forward; backward sums this rank's partial gradient over tp.
  auto summed = [&](const Tensor& t) {
    return t.defined() ? parallel::copy_to_region(t, *sequence_tp_) : t;
  };
  return layernorm(x, summed(weight), summed(bias), eps_);
}

RMSNorm::RMSNorm(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", ones({dim}));
}

}  // namespace keel::nn
