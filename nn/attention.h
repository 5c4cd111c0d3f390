// Causal self-attention on the fused attention op: one QKV projection,
// heads split by views (no copies until the kernel), output projection, and
// GPT-2's two dropouts: on the attention probabilities (attn_dropout) and on
// the output (resid_dropout). The fused op has no dropout, so while
// attn_dropout is active (training, p > 0) the attention is formed unfused
// (attention_unfused, which materialises the (B, H, T, T) probabilities).
//
// Tensor parallelism (Megatron's): qkv is column-parallel with stride 3, so
// each tp rank holds whole heads H/tp of q, k and v; attention runs on those
// heads alone; proj is row-parallel, its partial products all-reduced. At
// tp = 1 both are the serial Linear.
#pragma once

#include "nn/tensor_parallel.h"

namespace keel::nn {

class CausalSelfAttention : public Module {
 public:
  // The attention probabilities' dropout draws from rng.model_parallel
  // (heads are what tensor parallelism shards), the output's from
  // rng.replicated.
  // heads must divide by tp (checked, naming both).
  // sequence_parallel: x and the output are this rank's (B, T / tp, C)
  // slice of the sequence (nn/tensor_parallel.h).
  CausalSelfAttention(int64_t dim, int64_t heads, bool bias, double dropout_p,
                      parallel::ParallelContext& ctx, Generator& gen, double init_std,
                      double proj_init_std, const DropoutStreams& rng = {},
                      bool sequence_parallel = false);
  // x (B, T, C) -> (B, T, C), the same on every tp rank.
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<ColumnParallelLinear> qkv;  // (3C / tp, C): this rank's heads of q, k, v
  std::shared_ptr<RowParallelLinear> proj;    // (C, C / tp)
  std::shared_ptr<Dropout> attn_dropout, resid_dropout;

 private:
  int64_t dim_, heads_;
  int tp_rank_, tp_;
  bool sequence_parallel_;
};

}  // namespace keel::nn
