// The Hyena language model: GPT-2's pre-LN residual stack (LayerNorm, the
// GELU-tanh MLP, tied input and output embeddings, residual projections
// initialised with std init_std / sqrt(2 L)) with the Hyena operator
// (nn/hyena.h) in place of attention and no positional embedding: the
// causal convolutions carry position. model.dropout acts on the embeddings,
// on both residual branches, and inside the operator on the gated streams.
#pragma once

#include "nn/hyena.h"
#include "nn/mlp.h"

namespace keel::hyena {

struct HyenaLMConfig {
  int64_t vocab_size = 50257;
  int64_t padded_vocab_size = 0;  // 0: vocab_size rounded up to a multiple of 128
  int64_t block_size = 1024;      // longest context: the implicit filters' length
  int64_t n_layer = 12;
  int64_t n_embd = 768;
  double dropout = 0.0;
  bool bias = true;
  double init_std = 0.02;
  bool mlp = true;                      // false: blocks of the operator alone
  bool checkpoint_activations = false;  // recompute each block in backward
  // The operator's own fields (order, filters, modulation); d_model, l_max,
  // dropout, bias and the init scales are filled from the fields above.
  nn::HyenaConfig op;

  int64_t padded_vocab() const;
  nn::HyenaConfig operator_config() const;
  void validate() const;  // keel::Error naming the bad field
};

class Block : public nn::Module {
 public:
  Block(const HyenaLMConfig& cfg, parallel::ParallelContext& ctx, Generator& gen,
        const nn::DropoutStreams& rng = {});
  Tensor forward(const Tensor& x) const;  // (B, T, C) -> (B, T, C)
  std::shared_ptr<nn::LayerNorm> ln_1, ln_2;
  std::shared_ptr<nn::HyenaOperator> mixer;
  std::shared_ptr<nn::Dropout> resid_dropout;  // on the mixer's branch
  std::shared_ptr<nn::MLP> mlp;
};

class HyenaLM : public nn::Module {
 public:
  // Weights are drawn from a generator seeded with `seed`, in registration
  // order. One process's whole model (tp = 1; sharding Hyena is the
  // every-family-under-every-parallelism issue).
  HyenaLM(const HyenaLMConfig& cfg, uint64_t seed, const nn::DropoutStreams& rng = {},
          parallel::ParallelContext* ctx = nullptr);
  // ids (B, T) -> logits (B, T, V) over the real vocabulary (padding cut off).
  Tensor forward(const Tensor& ids) const;
  // Mean next-token cross-entropy of ids (B, T) against targets (B, T).
  Tensor loss(const Tensor& ids, const Tensor& targets) const;
  // forward(ids) == head(hidden(ids)): hidden (B, T, C) after ln_f, and the
  // tied head on any rows (..., C) -> (..., V) (recipes::query_loss).
  Tensor hidden(const Tensor& ids) const;
  Tensor head(const Tensor& h) const;
  const HyenaLMConfig& config() const { return cfg_; }

  std::shared_ptr<nn::Embedding> wte;  // (Vp, C), tied to the head
  std::shared_ptr<nn::Dropout> drop;   // on the embeddings
  std::shared_ptr<nn::ModuleList<Block>> blocks;
  std::shared_ptr<nn::LayerNorm> ln_f;

 private:
  HyenaLMConfig cfg_;
  std::unique_ptr<parallel::ParallelContext> own_ctx_;  // a world of one, without `ctx`
  std::vector<Generator*> streams_;  // rng's generators, replayed by recomputed blocks
};

}  // namespace keel::hyena
