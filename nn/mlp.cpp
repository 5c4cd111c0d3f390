#include "nn/mlp.h"

namespace keel::nn {

MLP::MLP(int64_t dim, int64_t hidden, bool bias, parallel::ParallelContext& ctx, Generator& gen,
         double init_std, double proj_init_std, double dropout_p, const DropoutStreams& rng,
         bool sequence_parallel)
    : tp_rank_(ctx.coord().tp), tp_(ctx.shape().tp), sequence_parallel_(sequence_parallel) {
  fc = register_module("fc", std::make_shared<ColumnParallelLinear>(
                                 dim, hidden, bias, ctx, gen, init_std, /*gather_output=*/false,
                                 /*stride=*/1, sequence_parallel));
  proj = register_module(
      "proj", std::make_shared<RowParallelLinear>(hidden, dim, bias, ctx, gen, proj_init_std,
                                                  /*input_is_parallel=*/true, sequence_parallel));
  // proj's output is the same on every tp rank (or, sequence parallel, this
  // rank's slice of it): so is its mask.
  resid_dropout =
      register_module("resid_dropout", std::make_shared<Dropout>(dropout_p, rng.replicated));
}

Tensor MLP::forward(const Tensor& x) const {
  Tensor out = proj->forward(gelu_tanh(fc->forward(x)));  // x's shape
  if (!sequence_parallel_) return resid_dropout->forward(out);
  // This rank's slice of the sequence: its box of the logical (B, T, C) mask.
  const int64_t local = out.size(1);
  return resid_dropout->forward(
      out, DropoutBox{{out.size(0), local * tp_, out.size(2)}, {0, tp_rank_ * local, 0}});
}

}  // namespace keel::nn
