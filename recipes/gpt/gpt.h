// The GPT recipe: GPT-2's architecture (learned positions, pre-LN blocks,
// GELU-tanh MLP, input and output embeddings tied, residual projections
// initialised with std 0.02 / sqrt(2 L)) at any size. model.dropout acts
// where GPT-2's does: on the embeddings (drop), the attention probabilities
// (attn.attn_dropout), and both residual branches (attn.resid_dropout,
// mlp.resid_dropout).
#pragma once

#include <string>

#include "nn/attention.h"
#include "nn/layers.h"
#include "nn/mlp.h"

namespace keel::gpt {

struct GptConfig {
  int64_t vocab_size = 50257;
  int64_t padded_vocab_size = 0;  // 0: vocab_size rounded up to a multiple of 128
  int64_t block_size = 1024;      // longest context (learned positions)
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_embd = 768;
  double dropout = 0.0;
  bool bias = true;
  double init_std = 0.02;
  bool mlp = true;                      // false: blocks of attention alone (no ln_2, no MLP)
  bool checkpoint_activations = false;  // recompute each block in backward
  // Megatron's sequence parallelism over the tp ranks (parallel.sequence_parallel):
  // between the tensor-parallel linears the residual stream, the norms and
  // the dropouts hold this rank's T / tp slice of the sequence.
  bool sequence_parallel = false;

  int64_t padded_vocab() const;
  void validate() const;  // keel::Error naming the bad field
};

class Block : public nn::Module {
 public:
  Block(const GptConfig& cfg, parallel::ParallelContext& ctx, Generator& gen,
        const nn::DropoutStreams& rng = {});
  Tensor forward(const Tensor& x) const;  // (B, T, C) -> (B, T, C)
  std::shared_ptr<nn::LayerNorm> ln_1, ln_2;
  std::shared_ptr<nn::CausalSelfAttention> attn;
  std::shared_ptr<nn::MLP> mlp;
};

class GPT : public nn::Module {
 public:
  // Weights are drawn from a generator seeded with `seed`, in registration order.
  // Dropout draws from `rng` (the training context's streams; null: the
  // default generator). With `ctx`, the model is split over its tp group
  // (Megatron's layout: vocabulary-parallel embedding and tied head,
  // column- and row-parallel attention and MLP; n_head and the padded
  // vocabulary must divide by tp); without, it is one process's whole model.
  GPT(const GptConfig& cfg, uint64_t seed, const nn::DropoutStreams& rng = {},
      parallel::ParallelContext* ctx = nullptr);
  // ids (B, T) -> logits (B, T, V) over the real vocabulary (padding cut
  // off), whole on every tp rank (gathered: for sampling and tests; the loss
  // never gathers them).
  Tensor forward(const Tensor& ids) const;
  // Mean next-token cross-entropy of ids (B, T) against targets (B, T).
  Tensor loss(const Tensor& ids, const Tensor& targets) const;
  // For losses that score a few positions (recipes::query_loss):
  // hidden(ids) (B, T, C) after ln_f, whole on every tp rank (gathered
  // under sequence parallelism), and head(h) (..., C) -> (..., V), also
  // whole; head(hidden(ids)) == forward(ids).
  Tensor hidden(const Tensor& ids) const;
  Tensor head(const Tensor& h) const;
  const GptConfig& config() const { return cfg_; }

  std::shared_ptr<nn::VocabParallelEmbedding> wte;  // (Vp / tp, C), tied to the head
  std::shared_ptr<nn::Embedding> wpe;
  std::shared_ptr<nn::Dropout> drop;  // on wte + wpe
  std::shared_ptr<nn::ModuleList<Block>> blocks;
  std::shared_ptr<nn::LayerNorm> ln_f;

 private:
  Tensor local_hidden(const Tensor& ids) const;  // (B, T, C) after ln_f; (B, T / tp, C) under sp
  Tensor local_logits(const Tensor& ids) const;  // (B, T, Vp / tp): this rank's vocabulary
  GptConfig cfg_;
  std::unique_ptr<parallel::ParallelContext> own_ctx_;  // a world of one, without `ctx`
  parallel::Communicator* tp_ = nullptr;
  Tensor pad_mask_;  // (Vp / tp) 0 / -inf over this shard's rows, when it holds padding (tp > 1)
  std::vector<Generator*> streams_;  // rng's generators, replayed by recomputed blocks
};

}  // namespace keel::gpt
