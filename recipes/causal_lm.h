// What every causal language model family shares, whatever its mixer: the
// vocabulary taken from the data when the config gives none; the tasks it
// can train (causal_lm on token shards, mqar on generated MQAR examples);
// and the recipe's data (this data-parallel rank's share), loss and
// sampler.
#pragma once

#include <functional>
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

// The output head of a family: hidden rows (R, C) -> logits (R, V), each
// row alone (its final norm, if any, and the projection).
using HeadFn = std::function<Tensor(const Tensor&)>;

// The mqar objective: the mean cross-entropy over the positions with a
// target (not -100), and their accuracy (argmax == target) as the metric
// "accuracy". The head scores only those rows (index_select of `hidden`
// (B, T, C)), num_kv_pairs of every seq_len: the full logits' loss and
// gradients at a fraction of the head's cost, which at Zoology's vocabulary
// of 8192 is most of a small model's step.
trainer::LossOutput query_loss(const Tensor& hidden, const Tensor& targets, const HeadFn& head);

// A recipe around `model` without a sampler: LM has loss(ids, targets)
// (the causal_lm objective, the family's own, e.g. vocabulary-parallel),
// and hidden(ids) -> (B, T, C) and head(h) with head(hidden(ids)) ==
// forward(ids), the logits over the real vocabulary (for mqar).
template <typename LM>
Recipe causal_lm_recipe(std::shared_ptr<LM> model, const config::Config& cfg,
                        const parallel::ParallelContext& ctx) {
  Recipe r;
  r.module = model;
  if (cfg.task().kind_case() == config::Task::kMqar)
    r.loss = [model](const trainer::Batch& b) {
      return query_loss(model->hidden(b.at("inputs")), b.at("targets"),
                        [&](const Tensor& h) { return model->head(h); });
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
