// What every causal language model over token shards shares, whatever its
// family: the vocabulary taken from the data when the config gives none,
// and the recipe's data (this data-parallel rank's share of the shards),
// loss (next-token cross-entropy on a batch's inputs and targets) and
// sampler (recomputing the window per token).
#pragma once

#include <memory>

#include "recipes/recipe.h"

namespace keel::recipes {

// `configured` (model.<family>.vocab_size, named by `field`) when positive,
// else the data's vocabulary; a configured vocabulary smaller than the
// data's is a keel::Error.
int64_t lm_vocab_size(const config::Config& cfg, int64_t configured, const char* field);

// The recipe's data and has_val from the config's token shards.
void add_shard_data(Recipe& r, const config::Config& cfg, const parallel::ParallelContext& ctx);

// A recipe around `model`: LM has loss(ids, targets), forward(ids) ->
// logits (B, T, V), device() and config().block_size.
template <typename LM>
Recipe causal_lm_recipe(std::shared_ptr<LM> model, const config::Config& cfg,
                        const parallel::ParallelContext& ctx) {
  Recipe r;
  r.module = model;
  r.loss = [model](const trainer::Batch& b) {
    return trainer::LossOutput{model->loss(b.at("inputs"), b.at("targets")), {}};
  };
  add_shard_data(r, cfg, ctx);
  r.sample = [model](std::vector<int32_t> prompt, const SampleOptions& o) {
    return sample_by_recompute([&](const Tensor& ids) { return model->forward(ids); },
                               model->device(), model->config().block_size, std::move(prompt), o);
  };
  return r;
}

}  // namespace keel::recipes
