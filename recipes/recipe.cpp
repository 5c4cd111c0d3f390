#include "recipes/recipe.h"

namespace keel::recipes {

gpt::GptConfig gpt_config(const config::Model& m, int64_t vocab_size) {
  gpt::GptConfig c;
  c.vocab_size = m.vocab_size() > 0 ? m.vocab_size() : vocab_size;
  KEEL_CHECK(c.vocab_size >= vocab_size, "model.vocab_size ", c.vocab_size,
             " is smaller than the tokenizer's vocabulary (", vocab_size, ")");
  c.padded_vocab_size = m.padded_vocab_size();
  c.block_size = m.block_size();
  c.n_layer = m.n_layer();
  c.n_head = m.n_head();
  c.n_embd = m.n_embd();
  c.dropout = m.dropout();
  c.bias = m.bias();
  c.init_std = m.init_std();
  c.checkpoint_activations = m.checkpoint_activations();
  return c;
}

Recipe make_recipe(const config::Config& cfg, int64_t vocab_size) {
  const std::string& family = cfg.model().family();
  KEEL_CHECK(family == "gpt", "model.family '", family, "' is not a known recipe (gpt)");
  auto model = std::make_shared<gpt::GPT>(gpt_config(cfg.model(), vocab_size), cfg.train().seed());
  Recipe r;
  r.module = model;
  r.loss = [model](const Tensor& x, const Tensor& y) { return model->loss(x, y); };
  r.generate = [model](std::vector<int32_t> prompt, const gpt::SampleOptions& o) {
    return gpt::generate(*model, std::move(prompt), o);
  };
  return r;
}

}  // namespace keel::recipes
