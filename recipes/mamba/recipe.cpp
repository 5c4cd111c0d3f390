#include "recipes/mamba/recipe.h"

#include "recipes/causal_lm.h"

namespace keel::mamba {

using trainer::check;
using trainer::require;

namespace {

// The model section without the data's vocabulary: what validate_config
// checks through the mixer's own validation.
MambaLMConfig section_config(const config::Config& cfg) {
  const auto& m = cfg.model().mamba();
  MambaLMConfig c;
  c.vocab_size = m.vocab_size();
  c.padded_vocab_size = m.padded_vocab_size();
  c.n_layer = m.n_layer();
  c.n_embd = m.n_embd();
  c.init_std = m.init_std();
  c.checkpoint_activations = cfg.model().checkpoint_activations();
  nn::MambaConfig& x = c.mixer;
  x.d_state = m.d_state();
  x.d_conv = m.d_conv();
  x.expand = m.expand();
  x.dt_rank = m.dt_rank();
  x.dt_min = m.dt_min();
  x.dt_max = m.dt_max();
  x.dt_init_floor = m.dt_init_floor();
  x.bias = m.bias();
  x.conv_bias = m.conv_bias();
  return c;
}

}  // namespace

void validate_config(const config::Config& cfg) {
  const auto& m = cfg.model().mamba();
  require(m.has_n_layer(), "model.mamba.n_layer");
  require(m.has_n_embd(), "model.mamba.n_embd");
  check(m.vocab_size() >= 0, "model.mamba.vocab_size", "must be >= 0 (0: from the data)");
  check(m.padded_vocab_size() >= 0, "model.mamba.padded_vocab_size",
        "must be >= 0 (0: the vocabulary rounded up to a multiple of 128)");
  check(m.n_layer() > 0, "model.mamba.n_layer", "must be positive");
  check(m.n_embd() > 0, "model.mamba.n_embd", "must be positive");
  check(m.init_std() > 0, "model.mamba.init_std", "must be positive");
  // The mixer's own fields (d_state, d_conv, expand, dt_*), by the mixer's checks.
  section_config(cfg).mixer_config().validate();
  recipes::check_lm_task(cfg, "mamba");
  recipes::check_data_parallel_only(cfg, "mamba");
}

MambaLMConfig mamba_config(const config::Config& cfg) {
  MambaLMConfig c = section_config(cfg);
  c.vocab_size =
      recipes::lm_vocab_size(cfg, cfg.model().mamba().vocab_size(), "model.mamba.vocab_size");
  return c;
}

recipes::Recipe make_recipe(const config::Config& cfg, parallel::ParallelContext& ctx) {
  auto model = std::make_shared<MambaLM>(mamba_config(cfg), cfg.train().seed());
  recipes::Recipe r = recipes::causal_lm_recipe(model, cfg, ctx);
  r.sample = [model](std::vector<int32_t> prompt, const recipes::SampleOptions& o) {
    return model->generate(std::move(prompt), o);
  };
  return r;
}

}  // namespace keel::mamba
