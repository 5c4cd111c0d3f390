#include "nn/layers.h"

#include <cmath>

#include "parallel/collectives.h"

namespace keel::nn {

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen, double init_std,
               bool weight_decay) {
  KEEL_CHECK(in > 0 && out > 0, "Linear: sizes must be positive, got in=", in, " out=", out);
  weight = register_parameter("weight", init_normal({out, in}, init_std, gen),  // (out, in)
                              weight_decay);
  if (has_bias) bias = register_parameter("bias", zeros({out}));  // (out)
}

Embedding::Embedding(int64_t num, int64_t dim, Generator& gen, double init_std) {
  KEEL_CHECK(num > 0 && dim > 0, "Embedding: sizes must be positive, got ", num, "x", dim);
  weight = register_parameter("weight", init_normal({num, dim}, init_std, gen));  // (num, dim)
}

CausalConv1d::CausalConv1d(int64_t channels, int64_t kernel, bool has_bias, Generator& gen) {
  KEEL_CHECK(channels > 0 && kernel > 0, "CausalConv1d: sizes must be positive, got ", channels,
             " channels, ", kernel, " taps");
  const double bound = 1.0 / std::sqrt(double(kernel));  // fan_in = K for a depthwise conv
  weight = register_parameter("weight", rand_uniform({channels, kernel}, -bound, bound, gen));
  if (has_bias) bias = register_parameter("bias", rand_uniform({channels}, -bound, bound, gen));
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
