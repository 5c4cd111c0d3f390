// Causal self-attention on the fused attention op: one QKV projection,
// heads split by views (no copies until the kernel), output projection.
#pragma once

#include "nn/layers.h"

namespace keel::nn {

class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(int64_t dim, int64_t heads, bool bias, double dropout_p, Generator& gen,
                      double init_std, double proj_init_std);
  // x (B, T, C) -> (B, T, C)
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Linear> qkv, proj;
  std::shared_ptr<Dropout> resid_dropout;

 private:
  int64_t dim_, heads_;
};

}  // namespace keel::nn
