#include "nn/mlp.h"

namespace keel::nn {

MLP::MLP(int64_t dim, int64_t hidden, bool bias, parallel::ParallelContext& ctx, Generator& gen,
         double init_std, double proj_init_std, double dropout_p, const DropoutStreams& rng) {
  fc = register_module(
      "fc", std::make_shared<ColumnParallelLinear>(dim, hidden, bias, ctx, gen, init_std));
  proj = register_module(
      "proj", std::make_shared<RowParallelLinear>(hidden, dim, bias, ctx, gen, proj_init_std));
  // proj's output is the same on every tp rank: so is its mask.
  resid_dropout =
      register_module("resid_dropout", std::make_shared<Dropout>(dropout_p, rng.replicated));
}

}  // namespace keel::nn
