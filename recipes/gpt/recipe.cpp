#include "recipes/gpt/recipe.h"

#include "recipes/causal_lm.h"

namespace keel::gpt {

using trainer::check;
using trainer::require;

void validate_config(const config::Config& cfg) {
  const auto& m = cfg.model().gpt();
  require(m.has_block_size(), "model.gpt.block_size");
  require(m.has_n_layer(), "model.gpt.n_layer");
  require(m.has_n_head(), "model.gpt.n_head");
  require(m.has_n_embd(), "model.gpt.n_embd");
  check(m.vocab_size() >= 0, "model.gpt.vocab_size", "must be >= 0 (0: from the data)");
  check(m.padded_vocab_size() >= 0, "model.gpt.padded_vocab_size",
        "must be >= 0 (0: the vocabulary rounded up to a multiple of 128)");
  check(m.block_size() > 0, "model.gpt.block_size", "must be positive");
  check(m.n_layer() > 0, "model.gpt.n_layer", "must be positive");
  check(m.n_head() > 0, "model.gpt.n_head", "must be positive");
  check(m.n_embd() > 0 && m.n_embd() % m.n_head() == 0, "model.gpt.n_embd",
        "must be a positive multiple of model.gpt.n_head");
  check(m.dropout() >= 0 && m.dropout() < 1, "model.gpt.dropout", "must be in [0, 1)");
  check(m.init_std() > 0, "model.gpt.init_std", "must be positive");
  check(cfg.data().seq_len() <= m.block_size(), "data.seq_len",
        "must be in [1, model.gpt.block_size]");
  recipes::check_lm_task(cfg, "gpt");
  // The layouts this family can run: data and tensor parallelism (context
  // and expert parallelism for GPT are their own issues).
  const auto& p = cfg.parallel();
  for (auto [v, name] : {std::pair{p.cp(), "parallel.cp"}, {p.ep(), "parallel.ep"}})
    check(v == 1, name, "must be 1: the gpt family does not shard over cp or ep yet");
  check(m.n_head() % p.tp() == 0, "model.gpt.n_head",
        "must divide by parallel.tp (" + std::to_string(p.tp()) + "): each rank holds whole heads");
}

GptConfig gpt_config(const config::Config& cfg) {
  const auto& m = cfg.model().gpt();
  GptConfig c;
  c.vocab_size = recipes::lm_vocab_size(cfg, m.vocab_size(), "model.gpt.vocab_size");
  c.padded_vocab_size = m.padded_vocab_size();
  c.block_size = m.block_size();
  c.n_layer = m.n_layer();
  c.n_head = m.n_head();
  c.n_embd = m.n_embd();
  c.dropout = m.dropout();
  c.bias = m.bias();
  c.init_std = m.init_std();
  c.mlp = m.mlp();
  c.checkpoint_activations = cfg.model().checkpoint_activations();
  c.sequence_parallel = cfg.parallel().sequence_parallel();
  return c;
}

recipes::Recipe make_recipe(const config::Config& cfg, parallel::ParallelContext& ctx) {
  auto model =
      std::make_shared<GPT>(gpt_config(cfg), cfg.train().seed(),
                            nn::DropoutStreams{&ctx.rng(parallel::RngRegion::Replicated),
                                               &ctx.rng(parallel::RngRegion::ModelParallel)},
                            &ctx);
  recipes::Recipe r = recipes::causal_lm_recipe(model, cfg, ctx);
  r.sample = recipes::recompute_sampler(model);
  return r;
}

}  // namespace keel::gpt
