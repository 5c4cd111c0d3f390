#include "nn/layers.h"

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

RMSNorm::RMSNorm(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", ones({dim}));
}

MLP::MLP(int64_t dim, int64_t hidden, bool bias, Generator& gen, double init_std,
         double proj_init_std, double dropout_p, const DropoutStreams& rng) {
  fc = register_module("fc", std::make_shared<Linear>(dim, hidden, bias, gen, init_std));
  proj = register_module("proj", std::make_shared<Linear>(hidden, dim, bias, gen, proj_init_std));
  resid_dropout =
      register_module("resid_dropout", std::make_shared<Dropout>(dropout_p, rng.replicated));
}

}  // namespace keel::nn
