// Causal self-attention on the fused attention op: one QKV projection,
// heads split by views (no copies until the kernel), output projection, and
// GPT-2's two dropouts: on the attention probabilities (attn_dropout) and on
// the output (resid_dropout). The fused op has no dropout, so while
// attn_dropout is active (training, p > 0) the attention is formed unfused
// (attention_unfused, which materialises the (B, H, T, T) probabilities).
#pragma once

#include "nn/layers.h"

namespace keel::nn {

class CausalSelfAttention : public Module {
 public:
  // The attention probabilities' dropout draws from rng.model_parallel
  // (heads are what tensor parallelism shards), the output's from
  // rng.replicated.
  CausalSelfAttention(int64_t dim, int64_t heads, bool bias, double dropout_p, Generator& gen,
                      double init_std, double proj_init_std, const DropoutStreams& rng = {});
  // x (B, T, C) -> (B, T, C)
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Linear> qkv, proj;
  std::shared_ptr<Dropout> attn_dropout, resid_dropout;

 private:
  int64_t dim_, heads_;
};

}  // namespace keel::nn
