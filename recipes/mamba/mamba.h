// The Mamba language model (Gu and Dao 2023): the token embedding, n_layer
// residual blocks x + mixer(RMSNorm(x)) of the Mamba mixer (nn/mamba.h), a
// final RMSNorm, and the head tied to the embedding. No positional
// embedding and no attention; out_proj is initialised with std
// init_std / sqrt(n_layer), as Mamba rescales its one residual per block.
// generate() samples recurrently: each layer keeps its conv and SSM state,
// so every token costs the same whatever the context length.
#pragma once

#include "nn/mamba.h"
#include "recipes/sampling.h"

namespace keel::mamba {

struct MambaLMConfig {
  int64_t vocab_size = 50277;
  int64_t padded_vocab_size = 0;  // 0: vocab_size rounded up to a multiple of 128
  int64_t n_layer = 24;
  int64_t n_embd = 768;
  double init_std = 0.02;
  double norm_eps = 1e-5;
  bool checkpoint_activations = false;  // recompute each block in backward
  // d_state, d_conv, expand, dt_rank, dt_*; d_model and the init scales
  // are filled from the fields above.
  nn::MambaConfig mixer;

  int64_t padded_vocab() const;
  nn::MambaConfig mixer_config() const;
  void validate() const;  // keel::Error naming the bad field
};

class Block : public nn::Module {
 public:
  Block(const MambaLMConfig& cfg, Generator& gen);
  Tensor forward(const Tensor& x) const;                  // (B, T, C) -> (B, T, C)
  Tensor step(const Tensor& x, nn::MambaState& s) const;  // (B, C) -> (B, C)
  std::shared_ptr<nn::RMSNorm> norm;
  std::shared_ptr<nn::MambaMixer> mixer;
};

class MambaLM : public nn::Module {
 public:
  // Weights are drawn from a generator seeded with `seed`, in registration order.
  MambaLM(const MambaLMConfig& cfg, uint64_t seed);
  // ids (B, T) -> logits (B, T, V) over the real vocabulary.
  Tensor forward(const Tensor& ids) const;
  // Mean next-token cross-entropy of ids (B, T) against targets (B, T).
  Tensor loss(const Tensor& ids, const Tensor& targets) const;
  // forward(ids) == head(hidden(ids)): hidden (B, T, C) out of the last
  // block, and the head (norm_f, then the tied projection) on any rows
  // (..., C) -> (..., V) (recipes::query_loss).
  Tensor hidden(const Tensor& ids) const;
  Tensor head(const Tensor& h) const;
  // Recurrent inference: one token per sequence, ids (B) -> logits (B, V),
  // advancing `states` (one per layer; empty: started from zeros).
  Tensor step(const Tensor& ids, std::vector<nn::MambaState>& states) const;
  // prompt + sampled ids, stepping the recurrent state through the prompt
  // and then one token at a time.
  std::vector<int32_t> generate(std::vector<int32_t> prompt,
                                const recipes::SampleOptions& opt) const;
  const MambaLMConfig& config() const { return cfg_; }

  std::shared_ptr<nn::Embedding> wte;  // (Vp, C), tied to the head
  std::shared_ptr<nn::ModuleList<Block>> blocks;
  std::shared_ptr<nn::RMSNorm> norm_f;

 private:
  MambaLMConfig cfg_;
};

}  // namespace keel::mamba
