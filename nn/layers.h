// Basic layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout (the GELU
// MLP is nn/mlp.h). Each owns its parameters and runs the fused ops of autograd/.
#pragma once

#include "autograd/autocast.h"
#include "nn/module.h"
#include "parallel/communicator.h"

namespace keel::nn {

// y = x W^T + b, W (out, in) as Megatron and PyTorch store it. Under an
// AutocastGuard, x, W and b are cast to the compute dtype (autograd/autocast.h).
class Linear : public Module {
 public:
  // The weight is decayed by AdamW unless `weight_decay` is false.
  Linear(int64_t in, int64_t out, bool bias, Generator& gen, double init_std = 0.02,
         bool weight_decay = true);
  Tensor forward(const Tensor& x) const {
    return linear(autocast(x), autocast(weight), autocast(bias));
  }
  Tensor weight;  // (out, in)
  Tensor bias;    // (out) or undefined
};

// Rows of the table, in the compute dtype under an AutocastGuard. The rows
// are gathered from the f32 table and then cast (not the table cast, then
// gathered): the same values, without casting a V x C table every step, and
// the table's gradient is scattered in f32.
class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim, Generator& gen, double init_std = 0.02);
  Tensor forward(const Tensor& ids) const { return autocast(embedding(weight, ids)); }
  Tensor weight;  // (num, dim)
};

// Depthwise causal conv over (B, C, T) (autograd causal_conv1d): weight
// (C, K), bias (C) or none, drawn as PyTorch's Conv1d draws them, uniform in
// +-1/sqrt(K). Output t sees inputs t-K+1..t. In the compute dtype under autocast.
class CausalConv1d : public Module {
 public:
  CausalConv1d(int64_t channels, int64_t kernel, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) const {
    return causal_conv1d(autocast(x), autocast(weight), autocast(bias));
  }
  Tensor weight;  // (C, K)
  Tensor bias;    // (C) or undefined
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, bool bias = true, double eps = 1e-5);
  Tensor forward(const Tensor& x) const;
  // Sequence parallelism: the input is this rank's slice of the sequence,
  // so the weight and bias gradients are partial; they are summed over
  // `tp` in backward (null: off).
  void set_sequence_parallel(parallel::Communicator* tp) { sequence_tp_ = tp; }
  Tensor weight;  // (dim) ones
  Tensor bias;    // (dim) zeros, or undefined

 private:
  double eps_;
  parallel::Communicator* sequence_tp_ = nullptr;
};

class RMSNorm : public Module {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6);
  Tensor forward(const Tensor& x) const { return rmsnorm(x, weight, eps_); }
  Tensor weight;  // (dim) ones

 private:
  double eps_;
};

// Draws its mask from the default generator, so checkpointed blocks replay it.
// The generators a model's dropouts draw from: the context's streams
// (parallel::ParallelContext::rng) for the replicated and the model-parallel
// regions. Null: the process default generator (models built outside a
// trainer, in tests).
struct DropoutStreams {
  Generator* replicated = nullptr;
  Generator* model_parallel = nullptr;
};

class Dropout : public Module {
 public:
  explicit Dropout(double p, Generator* gen = nullptr) : p_(p), gen_(gen) {}
  Tensor forward(const Tensor& x) const { return dropout(x, p_, is_training(), generator()); }
  // x is the `box` of a logical tensor (a sequence or head shard): it draws
  // its part of the logical tensor's mask.
  Tensor forward(const Tensor& x, const DropoutBox& box) const {
    return dropout(x, p_, is_training(), generator(), box);
  }
  Generator& generator() const { return gen_ ? *gen_ : default_generator(); }
  // Whether forward draws a mask (training with p > 0) rather than passing x
  // through: lets a caller pick a path that has room for the mask.
  bool active() const { return is_training() && p_ > 0.0; }
  double p() const { return p_; }

 private:
  double p_;
  Generator* gen_;
};

}  // namespace keel::nn
