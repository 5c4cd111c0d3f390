#include "recipes/mamba/mamba.h"

#include <cmath>

namespace keel::mamba {

int64_t MambaLMConfig::padded_vocab() const {
  return padded_vocab_size > 0 ? padded_vocab_size : (vocab_size + 127) / 128 * 128;
}

nn::MambaConfig MambaLMConfig::mixer_config() const {
  nn::MambaConfig c = mixer;
  c.d_model = n_embd;
  c.init_std = init_std;
  c.proj_init_std = init_std / std::sqrt(double(n_layer));
  return c;
}

void MambaLMConfig::validate() const {
  KEEL_CHECK(vocab_size > 0, "model.mamba.vocab_size must be positive, got ", vocab_size);
  KEEL_CHECK(padded_vocab() >= vocab_size, "model.mamba.padded_vocab_size ", padded_vocab_size,
             " is smaller than model.mamba.vocab_size ", vocab_size);
  KEEL_CHECK(n_layer > 0, "model.mamba.n_layer must be positive, got ", n_layer);
  KEEL_CHECK(n_embd > 0, "model.mamba.n_embd must be positive, got ", n_embd);
  KEEL_CHECK(init_std > 0, "model.mamba.init_std must be positive, got ", init_std);
  mixer_config().validate();
}

Block::Block(const MambaLMConfig& cfg, Generator& gen) {
  norm = register_module("norm", std::make_shared<nn::RMSNorm>(cfg.n_embd, cfg.norm_eps));
  mixer = register_module("mixer", std::make_shared<nn::MambaMixer>(cfg.mixer_config(), gen));
}

Tensor Block::forward(const Tensor& x) const { return add(x, mixer->forward(norm->forward(x))); }

Tensor Block::step(const Tensor& x, nn::MambaState& s) const {
  return add(x, mixer->step(norm->forward(x), s));
}

MambaLM::MambaLM(const MambaLMConfig& cfg, uint64_t seed) : cfg_(cfg) {
  cfg_.validate();
  Generator gen(seed);
  wte = register_module(
      "wte", std::make_shared<nn::Embedding>(cfg_.padded_vocab(), cfg_.n_embd, gen, cfg_.init_std));
  blocks = register_module("blocks", std::make_shared<nn::ModuleList<Block>>());
  for (int64_t l = 0; l < cfg_.n_layer; ++l) blocks->push_back(std::make_shared<Block>(cfg_, gen));
  norm_f = register_module("norm_f", std::make_shared<nn::RMSNorm>(cfg_.n_embd, cfg_.norm_eps));
}

Tensor MambaLM::head(const Tensor& h) const {
  // Tied output embedding, in the compute dtype under autocast.
  Tensor logits = linear(norm_f->forward(h), autocast(wte->weight));  // (..., Vp)
  return narrow(logits, logits.dim() - 1, 0, cfg_.vocab_size);        // (..., V)
}

Tensor MambaLM::forward(const Tensor& ids) const { return head(hidden(ids)); }

Tensor MambaLM::hidden(const Tensor& ids) const {
  KEEL_CHECK(ids.dim() == 2, "MambaLM: expected token ids (B, T), got ", ids.describe());
  Tensor x = wte->forward(ids);  // (B, T, C)
  for (const auto& block : *blocks) {
    if (cfg_.checkpoint_activations && is_training()) {
      const Block* b = block.get();
      x = checkpoint(
          [b](const std::vector<Tensor>& in) { return std::vector<Tensor>{b->forward(in[0])}; },
          {x})[0];
    } else {
      x = block->forward(x);
    }
  }
  return x;
}

Tensor MambaLM::loss(const Tensor& ids, const Tensor& targets) const {
  KEEL_CHECK(targets.sizes() == ids.sizes(), "MambaLM: targets ", targets.describe(),
             " do not match ids ", ids.describe());
  Tensor logits = forward(ids);  // (B, T, V)
  return cross_entropy(reshape(logits, {-1, cfg_.vocab_size}), reshape(targets, {-1}));
}

Tensor MambaLM::step(const Tensor& ids, std::vector<nn::MambaState>& states) const {
  NoGradGuard no_grad;
  KEEL_CHECK(ids.dim() == 1, "MambaLM::step: expected one token per sequence (B), got ",
             ids.describe());
  if (states.empty())
    for (const auto& block : *blocks) states.push_back(block->mixer->initial_state(ids.size(0)));
  KEEL_CHECK(states.size() == blocks->size(), "MambaLM::step: ", states.size(), " states for ",
             blocks->size(), " layers");
  Tensor x = wte->forward(ids);  // (B, C)
  for (size_t l = 0; l < blocks->size(); ++l) x = (*blocks)[l].step(x, states[l]);
  return head(x);  // (B, V)
}

std::vector<int32_t> MambaLM::generate(std::vector<int32_t> prompt,
                                       const recipes::SampleOptions& opt) const {
  std::vector<nn::MambaState> states;
  size_t consumed = 0;  // ids already stepped through the states
  Tensor logits;        // (1, V) after the last consumed id
  auto next_logits = [&](const std::vector<int32_t>& ids) {
    for (; consumed < ids.size(); ++consumed)
      logits = step(from_vector<int32_t>({ids[consumed]}, {1}).to(device()), states);
    return logits.to_vector<float>();  // (V)
  };
  return recipes::sample_tokens(next_logits, std::move(prompt), opt);
}

}  // namespace keel::mamba
