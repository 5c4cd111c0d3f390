// One optimizer interface for every layout. It owns the whole path from
// backward to updated weights: the gradient reduction across the ranks that
// hold the same parameters (bucketed, overlapped with backward), the global
// gradient norm, the AdamW step, and its state as checkpoint parts. Two
// implementations sit behind it, chosen by make_optimizer from the config
// and the layout, so the training loop has no parallelism branches:
//   - AdamW with replicated moments (gradients all-reduced when the group
//     has more than one rank);
//   - ZeRO-1 (parallel.zero_stage = 1 with more than one data rank): moments
//     sharded, gradients reduce-scattered, parameters all-gathered.
#pragma once

#include <memory>

#include "parallel/context.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"

namespace keel::trainer {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Before each micro-step's backward: `last` on the last micro-step of
  // gradient accumulation, whose gradients are reduced as backward
  // finishes them.
  virtual void begin_backward(bool last) = 0;
  // Collective, after the last backward: completes the reduction.
  virtual void finish_backward() = 0;
  // Collective: the norm of the whole (reduced) gradient, the same on every
  // rank.
  virtual double grad_norm() = 0;
  // Collective: one update at learning rate `lr`, gradients multiplied by
  // grad_scale first (clipping, loss-scale removal).
  virtual void step(double lr, double grad_scale) = 0;
  virtual int64_t steps_taken() const = 0;
  virtual void set_steps_taken(int64_t steps) = 0;
  // The moments as checkpoint parts "<param>/m" and "<param>/v" of their
  // full logical tensors: what this rank writes (`saving`) or reads.
  virtual NamedParts state_parts(bool saving) = 0;
};

// For `model` (already on ctx.device()) under cfg.optim and cfg.parallel.
std::unique_ptr<Optimizer> make_optimizer(const config::Config& cfg, nn::Module& model,
                                          parallel::ParallelContext& ctx);

// The model's parameters and buffers as checkpoint parts of their full
// logical tensors: saving, the ranks that hold a tensor whole split its
// writes evenly; loading, each reads it whole.
NamedParts model_parts(const nn::Module& model, parallel::ParallelContext& ctx, bool saving);

}  // namespace keel::trainer
