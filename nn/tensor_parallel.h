// Megatron-LM's tensor-parallel layers, as Modules over the tp group of a
// ParallelContext (parallel/collectives.h does the communication):
//
//   ColumnParallelLinear   W (out, in) split by output rows; x replicated in,
//                          this rank's output columns out (or all of them,
//                          gather_output); backward all-reduces dx.
//   RowParallelLinear      W (out, in) split by input columns; x split in
//                          (input_is_parallel) or scattered here; the partial
//                          products are all-reduced, then the bias is added
//                          once.
//   VocabParallelEmbedding the table split by vocabulary rows; ids outside
//                          this rank's range give zero rows; all-reduced.
//
// Sequence parallelism (Megatron's): with `sequence_parallel`, activations
// outside the linears are this rank's slice (B, T / tp, ...) of the
// sequence (dim 1). A column-parallel linear all-gathers its input along T
// (backward: reduce-scatter) instead of copying it, and keeps only its slice
// for backward, gathering it again there for the weight gradient
// (parallel/sequence_parallel_linear.h); a row-parallel linear
// reduce-scatters its output along T (backward: all-gather) instead of
// all-reducing it. The norms, dropouts and linear inputs between them hold
// 1 / tp of the activations, for one extra all-gather per column-parallel
// linear in the backward (the all-reduce volume is otherwise unchanged).
//
// Every weight is registered with its ParamSpec and drawn as its box of the
// serial tensor (nn::init_normal(spec, ...)), consuming the generator as the
// serial draw does: a model built from these layers at any tp starts from
// the weights of tp = 1, and checkpoints hold the logical tensors.
#pragma once

#include "nn/layers.h"
#include "nn/param_spec.h"
#include "parallel/context.h"

namespace keel::nn {

// A spec for a weight of logical `shape` split along `dim` over ctx's tp
// axis (`stride` segments each split, for fused weights).
ParamSpec tp_spec(const Shape& shape, int64_t dim, parallel::ParallelContext& ctx,
                  bool decay = false, int64_t stride = 1);

class ColumnParallelLinear : public Module {
 public:
  // `stride`: the output holds `stride` equal segments (qkv: 3), each split
  // over tp, so every rank keeps whole heads of each. gather_output needs
  // stride 1 (a gathered strided output would interleave the segments).
  ColumnParallelLinear(int64_t in, int64_t out, bool bias, parallel::ParallelContext& ctx,
                       Generator& gen, double init_std = 0.02, bool gather_output = false,
                       int64_t stride = 1, bool sequence_parallel = false);
  // x (..., in), the same on every tp rank -> (..., out / tp), or (..., out)
  // with gather_output. Sequence parallel: x (B, T / tp, in), this rank's
  // slice -> (B, T, out / tp).
  Tensor forward(const Tensor& x) const;
  int64_t local_out() const { return weight.size(0); }
  Tensor weight;  // (out / tp, in)
  Tensor bias;    // (out / tp) or undefined

 private:
  parallel::Communicator* tp_;
  bool gather_output_, sequence_parallel_;
};

class RowParallelLinear : public Module {
 public:
  RowParallelLinear(int64_t in, int64_t out, bool bias, parallel::ParallelContext& ctx,
                    Generator& gen, double init_std = 0.02, bool input_is_parallel = true,
                    bool sequence_parallel = false);
  // x (..., in / tp) when input_is_parallel (a column-parallel output), else
  // (..., in) replicated -> (..., out), the same on every tp rank. Sequence
  // parallel (needs input_is_parallel): x (B, T, in / tp) -> (B, T / tp,
  // out), this rank's slice.
  Tensor forward(const Tensor& x) const;
  Tensor weight;  // (out, in / tp)
  Tensor bias;    // (out), replicated, or undefined

 private:
  parallel::Communicator* tp_;
  bool input_is_parallel_, sequence_parallel_;
};

class VocabParallelEmbedding : public Module {
 public:
  // num must divide by tp (a padded vocabulary), checked with both numbers.
  VocabParallelEmbedding(int64_t num, int64_t dim, parallel::ParallelContext& ctx, Generator& gen,
                         double init_std = 0.02);
  // ids (...) global -> (..., dim), the same on every tp rank.
  Tensor forward(const Tensor& ids) const;
  int64_t vocab_start() const { return start_; }
  Tensor weight;  // (num / tp, dim): rows [vocab_start, vocab_start + num / tp)

 private:
  parallel::Communicator* tp_;
  int64_t start_ = 0;
};

}  // namespace keel::nn
