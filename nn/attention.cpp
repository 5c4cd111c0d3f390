#include "nn/attention.h"

namespace keel::nn {

CausalSelfAttention::CausalSelfAttention(int64_t dim, int64_t heads, bool bias, double dropout_p,
                                         Generator& gen, double init_std, double proj_init_std,
                                         const DropoutStreams& rng)
    : dim_(dim), heads_(heads) {
  KEEL_CHECK(heads > 0 && dim % heads == 0, "attention: width ", dim,
             " is not divisible by the head count ", heads);
  qkv = register_module("qkv", std::make_shared<Linear>(dim, 3 * dim, bias, gen, init_std));
  proj = register_module("proj", std::make_shared<Linear>(dim, dim, bias, gen, proj_init_std));
  attn_dropout =
      register_module("attn_dropout", std::make_shared<Dropout>(dropout_p, rng.model_parallel));
  resid_dropout =
      register_module("resid_dropout", std::make_shared<Dropout>(dropout_p, rng.replicated));
}

Tensor CausalSelfAttention::forward(const Tensor& x) const {
  KEEL_CHECK(x.dim() == 3 && x.size(2) == dim_, "attention: expected input (B, T, ", dim_,
             "), got ", x.describe());
  const int64_t B = x.size(0), T = x.size(1), H = heads_, D = dim_ / heads_;
  Tensor qkv_out = qkv->forward(x);  // (B, T, 3C)
  std::vector<Tensor> parts = split(qkv_out, {dim_, dim_, dim_}, 2);
  auto heads = [&](const Tensor& t) {  // (B, T, C) -> (B, H, T, D), a view
    return transpose(reshape(t, {B, T, H, D}), 1, 2);
  };
  const Tensor q = heads(parts[0]), k = heads(parts[1]), v = heads(parts[2]);  // (B, H, T, D)
  // The fused op has no dropout. The unfused one draws the probabilities'
  // mask from attn_dropout's generator, so checkpointed blocks replay it.
  Tensor y;  // (B, H, T, D)
  if (attn_dropout->active())
    y = attention_unfused(q, k, v, /*causal=*/true, /*scale=*/0.0, attn_dropout->p(),
                          /*training=*/true, attn_dropout->generator());
  else
    y = attention(q, k, v, /*causal=*/true).first;
  Tensor merged = reshape(contiguous(transpose(y, 1, 2)), {B, T, dim_});  // (B, T, C)
  return resid_dropout->forward(proj->forward(merged));
}

}  // namespace keel::nn
