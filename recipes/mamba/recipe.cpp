#include "recipes/mamba/recipe.h"

#include <cmath>

#include "recipes/causal_lm.h"

namespace keel::mamba {

using trainer::check;
using trainer::require;

void validate_config(const config::Config& cfg) {
  const auto& m = cfg.model().mamba();
  require(m.has_n_layer(), "model.mamba.n_layer");
  require(m.has_n_embd(), "model.mamba.n_embd");
  check(m.vocab_size() >= 0, "model.mamba.vocab_size", "must be >= 0 (0: from the data)");
  check(m.padded_vocab_size() >= 0, "model.mamba.padded_vocab_size",
        "must be >= 0 (0: the vocabulary rounded up to a multiple of 128)");
  check(m.n_layer() > 0, "model.mamba.n_layer", "must be positive");
  check(m.n_embd() > 0, "model.mamba.n_embd", "must be positive");
  check(m.d_state() > 0 && m.d_state() <= 256, "model.mamba.d_state",
        "must be in [1, 256] (the scan kernel's limit), got " + std::to_string(m.d_state()));
  check(m.d_conv() > 0, "model.mamba.d_conv", "must be positive");
  const double inner = m.expand() * double(m.n_embd());
  check(m.expand() > 0 && std::fabs(inner - std::round(inner)) < 1e-9, "model.mamba.expand",
        "must be positive and make expand * n_embd (" + std::to_string(inner) +
            ") a whole number of channels");
  check(m.dt_rank() >= 0, "model.mamba.dt_rank", "must be >= 0 (0: ceil(n_embd / 16))");
  check(m.dt_min() > 0 && m.dt_max() >= m.dt_min(), "model.mamba.dt_max",
        "must be >= model.mamba.dt_min > 0");
  check(m.dt_init_floor() >= 0, "model.mamba.dt_init_floor", "must be >= 0");
  check(m.init_std() > 0, "model.mamba.init_std", "must be positive");
  recipes::check_lm_task(cfg, "mamba");
  const auto& p = cfg.parallel();
  for (auto [v, name] :
       {std::pair{p.tp(), "parallel.tp"}, {p.cp(), "parallel.cp"}, {p.ep(), "parallel.ep"}})
    check(v == 1, name, "must be 1: the mamba family shards over dp only so far");
  check(!p.sequence_parallel(), "parallel.sequence_parallel",
        "must be false: the mamba family has no tensor parallelism yet");
}

MambaLMConfig mamba_config(const config::Config& cfg) {
  const auto& m = cfg.model().mamba();
  MambaLMConfig c;
  c.vocab_size = recipes::lm_vocab_size(cfg, m.vocab_size(), "model.mamba.vocab_size");
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

recipes::Recipe make_recipe(const config::Config& cfg, parallel::ParallelContext& ctx) {
  auto model = std::make_shared<MambaLM>(mamba_config(cfg), cfg.train().seed());
  recipes::Recipe r = recipes::causal_lm_recipe(model, cfg, ctx);
  r.sample = [model](std::vector<int32_t> prompt, const recipes::SampleOptions& o) {
    return model->generate(std::move(prompt), o);
  };
  return r;
}

}  // namespace keel::mamba
