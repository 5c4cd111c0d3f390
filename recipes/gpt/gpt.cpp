#include "recipes/gpt/gpt.h"

#include <cmath>

namespace keel::gpt {

int64_t GptConfig::padded_vocab() const {
  return padded_vocab_size > 0 ? padded_vocab_size : (vocab_size + 127) / 128 * 128;
}

void GptConfig::validate() const {
  KEEL_CHECK(vocab_size > 0, "model.gpt.vocab_size must be positive, got ", vocab_size);
  KEEL_CHECK(padded_vocab() >= vocab_size, "model.gpt.padded_vocab_size ", padded_vocab_size,
             " is smaller than model.gpt.vocab_size ", vocab_size);
  KEEL_CHECK(block_size > 0, "model.gpt.block_size must be positive, got ", block_size);
  KEEL_CHECK(n_layer > 0, "model.gpt.n_layer must be positive, got ", n_layer);
  KEEL_CHECK(n_head > 0 && n_embd > 0 && n_embd % n_head == 0, "model.gpt.n_embd ", n_embd,
             " must be a positive multiple of model.gpt.n_head ", n_head);
  KEEL_CHECK(dropout >= 0 && dropout < 1, "model.gpt.dropout must be in [0, 1), got ", dropout);
  KEEL_CHECK(init_std > 0, "model.gpt.init_std must be positive, got ", init_std);
}

Block::Block(const GptConfig& cfg, Generator& gen, const nn::DropoutStreams& rng) {
  const double proj_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layer));
  ln_1 = register_module("ln_1", std::make_shared<nn::LayerNorm>(cfg.n_embd, cfg.bias));
  attn = register_module(
      "attn", std::make_shared<nn::CausalSelfAttention>(
                  cfg.n_embd, cfg.n_head, cfg.bias, cfg.dropout, gen, cfg.init_std, proj_std, rng));
  ln_2 = register_module("ln_2", std::make_shared<nn::LayerNorm>(cfg.n_embd, cfg.bias));
  mlp = register_module("mlp", std::make_shared<nn::MLP>(cfg.n_embd, 4 * cfg.n_embd, cfg.bias, gen,
                                                         cfg.init_std, proj_std, cfg.dropout, rng));
}

Tensor Block::forward(const Tensor& x) const {
  Tensor h = add(x, attn->forward(ln_1->forward(x)));
  return add(h, mlp->forward(ln_2->forward(h)));
}

GPT::GPT(const GptConfig& cfg, uint64_t seed, const nn::DropoutStreams& rng) : cfg_(cfg) {
  for (Generator* g : {rng.replicated, rng.model_parallel})
    if (g) streams_.push_back(g);
  cfg_.validate();
  Generator gen(seed);
  wte = register_module(
      "wte", std::make_shared<nn::Embedding>(cfg_.padded_vocab(), cfg_.n_embd, gen, cfg_.init_std));
  wpe = register_module(
      "wpe", std::make_shared<nn::Embedding>(cfg_.block_size, cfg_.n_embd, gen, cfg_.init_std));
  drop = register_module("drop", std::make_shared<nn::Dropout>(cfg_.dropout, rng.replicated));
  blocks = register_module("blocks", std::make_shared<nn::ModuleList<Block>>());
  for (int64_t l = 0; l < cfg_.n_layer; ++l)
    blocks->push_back(std::make_shared<Block>(cfg_, gen, rng));
  ln_f = register_module("ln_f", std::make_shared<nn::LayerNorm>(cfg_.n_embd, cfg_.bias));
}

Tensor GPT::hidden(const Tensor& ids) const {
  KEEL_CHECK(ids.dim() == 2, "GPT: expected token ids (B, T), got ", ids.describe());
  const int64_t T = ids.size(1);
  KEEL_CHECK(T <= cfg_.block_size, "GPT: sequence length ", T, " exceeds model.gpt.block_size ",
             cfg_.block_size);
  Tensor pos = arange(0, double(T), 1, DType::I64, ids.device());       // (T)
  Tensor x = drop->forward(add(wte->forward(ids), wpe->forward(pos)));  // (B, T, C)
  for (const auto& block : *blocks) {
    if (cfg_.checkpoint_activations && is_training()) {
      const Block* b = block.get();
      x = checkpoint(
          [b](const std::vector<Tensor>& in) { return std::vector<Tensor>{b->forward(in[0])}; },
          {x}, streams_)[0];  // the recompute replays the block's dropout masks
    } else {
      x = block->forward(x);
    }
  }
  return ln_f->forward(x);
}

Tensor GPT::forward(const Tensor& ids) const {
  // (B, T, Vp), tied output embedding; in the compute dtype under autocast
  Tensor logits = linear(hidden(ids), autocast(wte->weight));
  return narrow(logits, 2, 0, cfg_.vocab_size);  // (B, T, V)
}

Tensor GPT::loss(const Tensor& ids, const Tensor& targets) const {
  KEEL_CHECK(targets.sizes() == ids.sizes(), "GPT: targets ", targets.describe(),
             " do not match ids ", ids.describe());
  Tensor logits = forward(ids);  // (B, T, V)
  const int64_t V = cfg_.vocab_size;
  return cross_entropy(reshape(logits, {-1, V}), reshape(targets, {-1}));
}

}  // namespace keel::gpt
