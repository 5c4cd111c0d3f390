#include "recipes/hyena/recipe.h"

#include "recipes/causal_lm.h"

namespace keel::hyena {

using trainer::check;
using trainer::require;

namespace {

// The model section without the data: what validate_config checks field by field.
HyenaLMConfig section_config(const config::Config& cfg) {
  const auto& m = cfg.model().hyena();
  HyenaLMConfig c;
  c.vocab_size = m.vocab_size();
  c.padded_vocab_size = m.padded_vocab_size();
  c.block_size = m.block_size();
  c.n_layer = m.n_layer();
  c.n_embd = m.n_embd();
  c.dropout = m.dropout();
  c.bias = m.bias();
  c.init_std = m.init_std();
  c.mlp = m.mlp();
  c.checkpoint_activations = cfg.model().checkpoint_activations();
  nn::HyenaConfig& op = c.op;
  op.order = m.order();
  op.filter_order = m.filter_order();
  op.emb_dim = m.emb_dim();
  op.filter_inner_layers = m.filter_inner_layers();
  op.short_filter_order = m.short_filter_order();
  op.filter_freq = m.filter_freq();
  op.modulate = m.modulate();
  op.fast_decay_pct = m.fast_decay_pct();
  op.slow_decay_pct = m.slow_decay_pct();
  op.decay_target = m.decay_target();
  op.modulation_shift = m.modulation_shift();
  op.filter_dropout = m.filter_dropout();
  return c;
}

}  // namespace

void validate_config(const config::Config& cfg) {
  const auto& m = cfg.model().hyena();
  require(m.has_block_size(), "model.hyena.block_size");
  require(m.has_n_layer(), "model.hyena.n_layer");
  require(m.has_n_embd(), "model.hyena.n_embd");
  check(m.vocab_size() >= 0, "model.hyena.vocab_size", "must be >= 0 (0: from the data)");
  check(m.padded_vocab_size() >= 0, "model.hyena.padded_vocab_size",
        "must be >= 0 (0: the vocabulary rounded up to a multiple of 128)");
  check(m.block_size() > 0, "model.hyena.block_size", "must be positive");
  check(m.n_layer() > 0, "model.hyena.n_layer", "must be positive");
  check(m.n_embd() > 0, "model.hyena.n_embd", "must be positive");
  check(m.dropout() >= 0 && m.dropout() < 1, "model.hyena.dropout", "must be in [0, 1)");
  check(m.init_std() > 0, "model.hyena.init_std", "must be positive");
  // The operator's own fields (order, emb_dim, filters, decay), by the
  // operator's checks.
  section_config(cfg).operator_config().validate();
  check(cfg.data().seq_len() <= m.block_size(), "data.seq_len",
        "must be in [1, model.hyena.block_size] (" + std::to_string(m.block_size()) +
            "): the implicit filters span block_size positions");
  recipes::check_lm_task(cfg, "hyena");
  recipes::check_data_parallel_only(cfg, "hyena");
}

HyenaLMConfig hyena_config(const config::Config& cfg) {
  HyenaLMConfig c = section_config(cfg);
  c.vocab_size =
      recipes::lm_vocab_size(cfg, cfg.model().hyena().vocab_size(), "model.hyena.vocab_size");
  return c;
}

recipes::Recipe make_recipe(const config::Config& cfg, parallel::ParallelContext& ctx) {
  auto model =
      std::make_shared<HyenaLM>(hyena_config(cfg), cfg.train().seed(),
                                nn::DropoutStreams{&ctx.rng(parallel::RngRegion::Replicated),
                                                   &ctx.rng(parallel::RngRegion::ModelParallel)},
                                &ctx);
  recipes::Recipe r = recipes::causal_lm_recipe(model, cfg, ctx);
  r.sample = recipes::recompute_sampler(model);
  return r;
}

}  // namespace keel::hyena
