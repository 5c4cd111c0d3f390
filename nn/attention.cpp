#include "nn/attention.h"

namespace keel::nn {

CausalSelfAttention::CausalSelfAttention(int64_t dim, int64_t heads, bool bias, double dropout_p,
                                         parallel::ParallelContext& ctx, Generator& gen,
                                         double init_std, double proj_init_std,
                                         const DropoutStreams& rng, bool sequence_parallel)
    : dim_(dim),
      heads_(heads),
      tp_rank_(ctx.coord().tp),
      tp_(ctx.shape().tp),
      sequence_parallel_(sequence_parallel) {
  KEEL_CHECK(heads > 0 && dim % heads == 0, "attention: width ", dim,
             " is not divisible by the head count ", heads);
  KEEL_CHECK(heads % tp_ == 0, "attention: ", heads, " heads do not split over tp = ", tp_);
  qkv = register_module("qkv", std::make_shared<ColumnParallelLinear>(
                                   dim, 3 * dim, bias, ctx, gen, init_std,
                                   /*gather_output=*/false, /*stride=*/3, sequence_parallel));
  proj = register_module(
      "proj", std::make_shared<RowParallelLinear>(dim, dim, bias, ctx, gen, proj_init_std,
                                                  /*input_is_parallel=*/true, sequence_parallel));
  attn_dropout =
      register_module("attn_dropout", std::make_shared<Dropout>(dropout_p, rng.model_parallel));
  resid_dropout =
      register_module("resid_dropout", std::make_shared<Dropout>(dropout_p, rng.replicated));
}

Tensor CausalSelfAttention::forward(const Tensor& x) const {
  KEEL_CHECK(x.dim() == 3 && x.size(2) == dim_, "attention: expected input (B, T, ", dim_,
             "), got ", x.describe());
  // This rank's heads: H / tp of them, C / tp channels of each of q, k, v.
  Tensor qkv_out = qkv->forward(x);  // (B, T, 3C / tp): the whole sequence
  const int64_t B = x.size(0), T = qkv_out.size(1), H = heads_ / tp_, D = dim_ / heads_;
  const int64_t C = H * D;
  std::vector<Tensor> parts = split(qkv_out, {C, C, C}, 2);
  auto heads = [&](const Tensor& t) {  // (B, T, C / tp) -> (B, H / tp, T, D), a view
    return transpose(reshape(t, {B, T, H, D}), 1, 2);
  };
  const Tensor q = heads(parts[0]), k = heads(parts[1]), v = heads(parts[2]);  // (B, H/tp, T, D)
  // The fused op has no dropout. The unfused one draws the probabilities'
  // mask from attn_dropout's generator, so checkpointed blocks replay it,
  // for these heads' box of the logical (B, H, T, T) probabilities.
  Tensor y;  // (B, H / tp, T, D)
  if (attn_dropout->active())
    y = attention_unfused(q, k, v, /*causal=*/true, /*scale=*/0.0, attn_dropout->p(),
                          /*training=*/true, attn_dropout->generator(),
                          DropoutBox{{B, heads_, T, T}, {0, tp_rank_ * H, 0, 0}});
  else
    y = attention(q, k, v, /*causal=*/true).first;
  Tensor merged = reshape(contiguous(transpose(y, 1, 2)), {B, T, C});  // (B, T, C / tp)
  Tensor out = proj->forward(merged);  // (B, T, C), or (B, T / tp, C) sequence parallel
  if (!sequence_parallel_) return resid_dropout->forward(out);
  return resid_dropout->forward(out, DropoutBox{{B, T, dim_}, {0, tp_rank_ * out.size(1), 0}});
}

}  // namespace keel::nn
