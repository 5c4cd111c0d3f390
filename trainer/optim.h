// AdamW over a model's named parameters (fused per-tensor pass, moments in
// f32), the learning-rate schedule and global-norm gradient clipping.
#pragma once

#include <string>
#include <vector>

#include "kernels/adamw.h"
#include "nn/module.h"

namespace keel::trainer {

struct AdamWConfig {
  double lr = 6e-4, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

class AdamW {
 public:
  // `decayed` lists the parameter names that get weight decay.
  AdamW(nn::NamedTensors params, const std::vector<std::string>& decayed, AdamWConfig cfg);
  // One update with learning rate `lr`; grads are multiplied by grad_scale
  // first (clipping). Parameters without a gradient are skipped.
  void step(double lr, double grad_scale = 1.0);
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  // The moments as "<param>/m" and "<param>/v" (full logical tensors).
  nn::NamedTensors state() const;
  const nn::NamedTensors& params() const { return params_; }

 private:
  nn::NamedTensors params_;
  std::vector<Tensor> m_, v_;
  std::vector<bool> decay_;
  AdamWConfig cfg_;
  int64_t step_ = 0;
};

// sqrt(sum over params of ||grad||^2), in double.
double global_grad_norm(const nn::NamedTensors& params);
// The factor that scales gradients down to norm `max_norm` (1 when within it or max_norm == 0).
double clip_coefficient(double norm, double max_norm);

struct LrSchedule {
  double lr = 6e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  std::string decay = "cosine";  // cosine | linear | constant
  double min_lr_ratio = 0.1;
  // Learning rate for 0-based step `step`: linear warmup, then decay to min_lr_ratio * lr.
  double at(int64_t step) const;
};

}  // namespace keel::trainer
