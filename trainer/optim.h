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

// Loss scaling for fp16 training. The loss is multiplied by scale() before
// backward so small gradients survive f16's narrow range; the optimizer step
// divides it back out. Dynamic (static_scale == 0): a step whose gradients
// hold an inf or NaN is skipped and the scale halved (not below min_scale);
// after `window` clean steps in a row it doubles. The scale is always
// initial * 2^k, so it divides out exactly.
struct LossScalerConfig {
  double static_scale = 0;  // > 0: fixed scale, steps never skipped for overflow
  double initial = 65536;
  int64_t window = 1000;
  double min_scale = 1;
};

class LossScaler {
 public:
  explicit LossScaler(LossScalerConfig cfg);
  double scale() const { return scale_; }
  // Records one step's outcome; returns whether the optimizer should step
  // (false: the gradients overflowed and are to be dropped). A static scale
  // steps anyway, and the caller's divergence checks catch the non-finite
  // values.
  bool update(bool grads_finite);
  // The dynamic state, for exact resume.
  int64_t clean_steps() const { return clean_; }
  void set_state(double scale, int64_t clean_steps);

 private:
  LossScalerConfig cfg_;
  double scale_;
  int64_t clean_ = 0;
};

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
