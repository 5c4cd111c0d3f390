// What every causal language model family shares, whatever its mixer: the
// vocabulary taken from the data when the config gives none; the tasks it
// can train (causal_lm on token shards, mqar on generated MQAR examples);
// and the recipe's data (this data-parallel rank's share), loss and
// sampler.
#pragma once

#include <memory>

#include "recipes/recipe.h"

namespace keel::recipes {

// `configured` (model.<family>.vocab_size, named by `field`) when positive,
// else the data's vocabulary (the shards', or MQAR's vocab_size); a
// configured vocabulary smaller than the data's is a keel::Error.
int64_t lm_vocab_size(const config::Config& cfg, int64_t configured, const char* field);

// Refuses a task this family cannot run or a data source that does not fit
// the task, naming the field: causal_lm (the default) reads token shards,
// mqar reads data { synthetic { mqar {...} } } (whose sizes are checked).
void check_lm_task(const config::Config& cfg, const char* family);

// Refuses tp, cp, ep > 1 and sequence parallelism, naming the field: for
// families that shard over dp only so far.
void check_data_parallel_only(const config::Config& cfg, const char* family);

// The recipe's data and has_val from the config's source.
void add_lm_data(Recipe& r, const config::Config& cfg, const parallel::ParallelContext& ctx);

// The mean cross-entropy of logits (B, T, V) against targets (B, T) over
// the positions not ignored (-100), and for mqar the accuracy there
// (argmax == target) as the metric "accuracy".
trainer::LossOutput lm_loss(const config::Config& cfg, const Tensor& logits, const Tensor& targets);

// A recipe around `model` without a sampler: LM has loss(ids, targets)
// (the causal_lm objective, the family's own, e.g. vocabulary-parallel) and
// forward(ids) -> logits (B, T, V) over the real vocabulary (for mqar, whose
// loss also scores the accuracy).
template <typename LM>
Recipe causal_lm_recipe(std::shared_ptr<LM> model, const config::Config& cfg,
                        const parallel::ParallelContext& ctx) {
  Recipe r;
  r.module = model;
  if (cfg.task().kind_case() == config::Task::kMqar)
    r.loss = [model, cfg](const trainer::Batch& b) {
      return lm_loss(cfg, model->forward(b.at("inputs")), b.at("targets"));
    };
  else
    r.loss = [model](const trainer::Batch& b) {
      return trainer::LossOutput{model->loss(b.at("inputs"), b.at("targets")), {}};
    };
  add_lm_data(r, cfg, ctx);
  return r;
}

// Sampling that recomputes the last config().block_size tokens for every
// new one (LM as above, with device()).
template <typename LM>
auto recompute_sampler(std::shared_ptr<LM> model) {
  return [model](std::vector<int32_t> prompt, const SampleOptions& o) {
    return sample_by_recompute([&](const Tensor& ids) { return model->forward(ids); },
                               model->device(), model->config().block_size, std::move(prompt), o);
  };
}

}  // namespace keel::recipes
