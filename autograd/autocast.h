// Mixed-precision compute (bf16 or f16 activations over f32 master weights).
//
// Inside an AutocastGuard(dt), the layers that multiply by weights (Linear,
// Embedding, a recipe's tied LM head) pass their weights and inputs through
// autocast(), which returns a differentiable cast to dt. The parameters stay
// f32 leaves: the cast's backward converts each gradient back to f32, so
// gradients accumulate (across uses, micro-steps and ranks) in f32 and the
// optimizer updates f32 weights. Everything downstream of a cast runs in dt,
// as Megatron-LM and llm.c run bf16 models: GEMMs on dt with f32
// accumulation, activations and saved tensors in dt. Norm weights are not
// cast (the norm kernels read them in f32 and return f32 gradients), the norm
// statistics, softmax and cross-entropy reductions accumulate in f32, and
// cross-entropy returns an f32 loss.
//
// The state is per thread. keel::checkpoint records the dtype in force at
// the forward and replays the block under it.
#pragma once

#include "autograd/autograd.h"

namespace keel {

class AutocastGuard {
 public:
  // `compute` F32 turns autocasting off inside the scope; BF16 or F16 on.
  explicit AutocastGuard(DType compute);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DType prev_;
};

// The compute dtype in force: F32 outside any AutocastGuard.
DType autocast_dtype();

// t cast to the compute dtype (differentiably) when autocast is on and t is
// a floating tensor of another dtype; t itself otherwise, including when t is
// undefined (an absent bias).
Tensor autocast(const Tensor& t);

}  // namespace keel
