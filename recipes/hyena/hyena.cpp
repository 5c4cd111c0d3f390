#include "recipes/hyena/hyena.h"

#include <cmath>

namespace keel::hyena {

int64_t HyenaLMConfig::padded_vocab() const {
  return padded_vocab_size > 0 ? padded_vocab_size : (vocab_size + 127) / 128 * 128;
}

nn::HyenaConfig HyenaLMConfig::operator_config() const {
  nn::HyenaConfig c = op;
  c.d_model = n_embd;
  c.l_max = block_size;
  c.dropout = dropout;
  c.bias = bias;
  c.init_std = init_std;
  c.proj_init_std = init_std / std::sqrt(2.0 * double(n_layer));
  return c;
}

void HyenaLMConfig::validate() const {
  KEEL_CHECK(vocab_size > 0, "model.hyena.vocab_size must be positive, got ", vocab_size);
  KEEL_CHECK(padded_vocab() >= vocab_size, "model.hyena.padded_vocab_size ", padded_vocab_size,
             " is smaller than model.hyena.vocab_size ", vocab_size);
  KEEL_CHECK(block_size > 0, "model.hyena.block_size must be positive, got ", block_size);
  KEEL_CHECK(n_layer > 0, "model.hyena.n_layer must be positive, got ", n_layer);
  KEEL_CHECK(n_embd > 0, "model.hyena.n_embd must be positive, got ", n_embd);
  KEEL_CHECK(dropout >= 0 && dropout < 1, "model.hyena.dropout must be in [0, 1), got ", dropout);
  KEEL_CHECK(init_std > 0, "model.hyena.init_std must be positive, got ", init_std);
  operator_config().validate();
}

Block::Block(const HyenaLMConfig& cfg, parallel::ParallelContext& ctx, Generator& gen,
             const nn::DropoutStreams& rng) {
  const nn::HyenaConfig op = cfg.operator_config();
  ln_1 = register_module("ln_1", std::make_shared<nn::LayerNorm>(cfg.n_embd, cfg.bias));
  mixer = register_module("mixer", std::make_shared<nn::HyenaOperator>(op, gen, rng));
  resid_dropout =
      register_module("resid_dropout", std::make_shared<nn::Dropout>(cfg.dropout, rng.replicated));
  if (cfg.mlp) {
    ln_2 = register_module("ln_2", std::make_shared<nn::LayerNorm>(cfg.n_embd, cfg.bias));
    mlp = register_module(
        "mlp", std::make_shared<nn::MLP>(cfg.n_embd, 4 * cfg.n_embd, cfg.bias, ctx, gen,
                                         cfg.init_std, op.proj_init_std, cfg.dropout, rng));
  }
}

Tensor Block::forward(const Tensor& x) const {
  Tensor h = add(x, resid_dropout->forward(mixer->forward(ln_1->forward(x))));
  return mlp ? add(h, mlp->forward(ln_2->forward(h))) : h;
}

HyenaLM::HyenaLM(const HyenaLMConfig& cfg, uint64_t seed, const nn::DropoutStreams& rng,
                 parallel::ParallelContext* ctx)
    : cfg_(cfg) {
  for (Generator* g : {rng.replicated, rng.model_parallel})
    if (g) streams_.push_back(g);
  cfg_.validate();
  if (!ctx) {
    own_ctx_ = std::make_unique<parallel::ParallelContext>();
    ctx = own_ctx_.get();
  }
  KEEL_CHECK(ctx->shape().tp == 1, "the hyena family runs with parallel.tp = 1 only so far, got ",
             ctx->shape().tp);
  Generator gen(seed);
  wte = register_module(
      "wte", std::make_shared<nn::Embedding>(cfg_.padded_vocab(), cfg_.n_embd, gen, cfg_.init_std));
  drop = register_module("drop", std::make_shared<nn::Dropout>(cfg_.dropout, rng.replicated));
  blocks = register_module("blocks", std::make_shared<nn::ModuleList<Block>>());
  for (int64_t l = 0; l < cfg_.n_layer; ++l)
    blocks->push_back(std::make_shared<Block>(cfg_, *ctx, gen, rng));
  ln_f = register_module("ln_f", std::make_shared<nn::LayerNorm>(cfg_.n_embd, cfg_.bias));
}

Tensor HyenaLM::hidden(const Tensor& ids) const {
  KEEL_CHECK(ids.dim() == 2, "HyenaLM: expected token ids (B, T), got ", ids.describe());
  KEEL_CHECK(ids.size(1) <= cfg_.block_size, "HyenaLM: sequence length ", ids.size(1),
             " exceeds model.hyena.block_size ", cfg_.block_size);
  Tensor x = drop->forward(wte->forward(ids));  // (B, T, C)
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

Tensor HyenaLM::head(const Tensor& h) const {
  // Tied output embedding, in the compute dtype under autocast.
  Tensor logits = linear(h, autocast(wte->weight));                // (..., Vp)
  return narrow(logits, logits.dim() - 1, 0, cfg_.vocab_size);      // (..., V)
}

Tensor HyenaLM::forward(const Tensor& ids) const { return head(hidden(ids)); }

Tensor HyenaLM::loss(const Tensor& ids, const Tensor& targets) const {
  KEEL_CHECK(targets.sizes() == ids.sizes(), "HyenaLM: targets ", targets.describe(),
             " do not match ids ", ids.describe());
  Tensor logits = forward(ids);  // (B, T, V)
  return cross_entropy(reshape(logits, {-1, cfg_.vocab_size}), reshape(targets, {-1}));
}

}  // namespace keel::hyena
