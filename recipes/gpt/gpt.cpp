#include "recipes/gpt/gpt.h"

#include <cmath>
#include <limits>

#include "parallel/collectives.h"
#include "parallel/vocab_parallel_cross_entropy.h"

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

Block::Block(const GptConfig& cfg, parallel::ParallelContext& ctx, Generator& gen,
             const nn::DropoutStreams& rng) {
  const double proj_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layer));
  const bool sp = cfg.sequence_parallel;
  ln_1 = register_module("ln_1", std::make_shared<nn::LayerNorm>(cfg.n_embd, cfg.bias));
  attn = register_module("attn", std::make_shared<nn::CausalSelfAttention>(
                                     cfg.n_embd, cfg.n_head, cfg.bias, cfg.dropout, ctx, gen,
                                     cfg.init_std, proj_std, rng, sp));
  if (cfg.mlp) {
    ln_2 = register_module("ln_2", std::make_shared<nn::LayerNorm>(cfg.n_embd, cfg.bias));
    mlp = register_module("mlp",
                          std::make_shared<nn::MLP>(cfg.n_embd, 4 * cfg.n_embd, cfg.bias, ctx, gen,
                                                    cfg.init_std, proj_std, cfg.dropout, rng, sp));
  }
  if (sp) {
    // The norms see a slice of the sequence: their gradients are summed over tp.
    ln_1->set_sequence_parallel(&ctx.device_group({parallel::Axis::TP}));
    if (ln_2) ln_2->set_sequence_parallel(&ctx.device_group({parallel::Axis::TP}));
  }
}

Tensor Block::forward(const Tensor& x) const {
  Tensor h = add(x, attn->forward(ln_1->forward(x)));
  return mlp ? add(h, mlp->forward(ln_2->forward(h))) : h;
}

GPT::GPT(const GptConfig& cfg, uint64_t seed, const nn::DropoutStreams& rng,
         parallel::ParallelContext* ctx)
    : cfg_(cfg) {
  for (Generator* g : {rng.replicated, rng.model_parallel})
    if (g) streams_.push_back(g);
  cfg_.validate();
  if (!ctx) {
    own_ctx_ = std::make_unique<parallel::ParallelContext>();
    ctx = own_ctx_.get();
  }
  const int tp = ctx->shape().tp;
  KEEL_CHECK(cfg_.n_head % tp == 0, "model.gpt.n_head ", cfg_.n_head,
             " does not divide by parallel.tp ", tp, " (each rank holds whole heads)");
  KEEL_CHECK(cfg_.padded_vocab() % tp == 0, "model.gpt.padded_vocab_size ", cfg_.padded_vocab(),
             " does not divide by parallel.tp ", tp, " (set it to a multiple of ", 128 * tp,
             ", say)");
  tp_ = &ctx->device_group({parallel::Axis::TP});
  Generator gen(seed);
  wte = register_module("wte", std::make_shared<nn::VocabParallelEmbedding>(
                                   cfg_.padded_vocab(), cfg_.n_embd, *ctx, gen, cfg_.init_std));
  wpe = register_module(
      "wpe", std::make_shared<nn::Embedding>(cfg_.block_size, cfg_.n_embd, gen, cfg_.init_std));
  drop = register_module("drop", std::make_shared<nn::Dropout>(cfg_.dropout, rng.replicated));
  blocks = register_module("blocks", std::make_shared<nn::ModuleList<Block>>());
  for (int64_t l = 0; l < cfg_.n_layer; ++l)
    blocks->push_back(std::make_shared<Block>(cfg_, *ctx, gen, rng));
  ln_f = register_module("ln_f", std::make_shared<nn::LayerNorm>(cfg_.n_embd, cfg_.bias));
  KEEL_CHECK(!cfg_.sequence_parallel || tp > 1,
             "parallel.sequence_parallel needs parallel.tp > 1, got tp ", tp);
  if (cfg_.sequence_parallel) ln_f->set_sequence_parallel(tp_);
  // The padding rows past the real vocabulary are no class: -inf in this
  // shard's logits, as the serial loss leaves them out by narrowing.
  const int64_t local = cfg_.padded_vocab() / tp, start = wte->vocab_start();
  if (tp > 1 && start + local > cfg_.vocab_size) {
    std::vector<float> pad(size_t(local), 0.0f);
    for (int64_t j = std::max<int64_t>(cfg_.vocab_size - start, 0); j < local; ++j)
      pad[size_t(j)] = -std::numeric_limits<float>::infinity();
    pad_mask_ = from_vector<float>(pad, {local});  // (Vp / tp)
  }
}

Tensor GPT::local_hidden(const Tensor& ids) const {
  KEEL_CHECK(ids.dim() == 2, "GPT: expected token ids (B, T), got ", ids.describe());
  const int64_t T = ids.size(1);
  KEEL_CHECK(T <= cfg_.block_size, "GPT: sequence length ", T, " exceeds model.gpt.block_size ",
             cfg_.block_size);
  Tensor pos = arange(0, double(T), 1, DType::I64, ids.device());  // (T)
  Tensor x = add(wte->forward(ids), wpe->forward(pos));            // (B, T, C)
  if (cfg_.sequence_parallel) {
    KEEL_CHECK(T % tp_->size() == 0, "GPT: sequence length ", T, " does not divide by tp ",
               tp_->size(), " (parallel.sequence_parallel)");
    // This rank's slice of the sequence from here to the head (backward:
    // the slices' gradients gathered), and its box of the embeddings' mask.
    x = parallel::scatter_to_region(x, 1, *tp_);  // (B, T / tp, C)
    const int64_t local = x.size(1);
    x = drop->forward(x, DropoutBox{{x.size(0), T, x.size(2)}, {0, tp_->rank() * local, 0}});
  } else {
    x = drop->forward(x);
  }
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

Tensor GPT::local_logits(const Tensor& ids) const {
  Tensor h = local_hidden(ids);  // (B, T, C) on every tp rank; (B, T / tp, C) sequence parallel
  // Each rank scores its vocabulary rows for the whole sequence: dh comes
  // back summed over tp (all-reduced, or reduce-scattered to the slices).
  if (cfg_.sequence_parallel)
    h = parallel::gather_from_sequence_region(h, 1, *tp_);  // (B, T, C)
  else if (tp_->size() > 1)
    h = parallel::copy_to_region(h, *tp_);
  // Tied output embedding; in the compute dtype under autocast.
  return linear(h, autocast(wte->weight));  // (B, T, Vp / tp)
}

Tensor GPT::forward(const Tensor& ids) const {
  Tensor logits = local_logits(ids);                                            // (B, T, Vp / tp)
  if (tp_->size() > 1) logits = parallel::gather_from_region(logits, 2, *tp_);  // (B, T, Vp)
  return narrow(logits, 2, 0, cfg_.vocab_size);                                 // (B, T, V)
}

Tensor GPT::hidden(const Tensor& ids) const {
  Tensor h = local_hidden(ids);
  return cfg_.sequence_parallel ? parallel::gather_from_sequence_region(h, 1, *tp_) : h;
}

Tensor GPT::head(const Tensor& h) const {
  // As local_logits: every rank scores its vocabulary rows of every row.
  Tensor x = tp_->size() > 1 ? parallel::copy_to_region(h, *tp_) : h;
  Tensor logits = linear(x, autocast(wte->weight));  // (..., Vp / tp)
  const int64_t last = logits.dim() - 1;
  if (tp_->size() > 1) logits = parallel::gather_from_region(logits, last, *tp_);  // (..., Vp)
  return narrow(logits, last, 0, cfg_.vocab_size);                               // (..., V)
}

Tensor GPT::loss(const Tensor& ids, const Tensor& targets) const {
  KEEL_CHECK(targets.sizes() == ids.sizes(), "GPT: targets ", targets.describe(),
             " do not match ids ", ids.describe());
  const int64_t V = cfg_.vocab_size;
  if (tp_->size() == 1) {
    Tensor logits = forward(ids);  // (B, T, V)
    return cross_entropy(reshape(logits, {-1, V}), reshape(targets, {-1}));
  }
  Tensor logits = local_logits(ids);  // (B, T, Vp / tp)
  const int64_t local = logits.size(2);
  if (pad_mask_.defined()) logits = add(logits, pad_mask_.to(logits.device()).to(logits.dtype()));
  return parallel::vocab_parallel_cross_entropy(reshape(logits, {-1, local}),
                                                reshape(targets, {-1}), *tp_);
}

}  // namespace keel::gpt
