// Fused optimizer kernels: one AdamW pass per parameter (gradient scaling
// for clipping, moment updates, bias correction, decoupled weight decay and
// the parameter write in a single sweep), and a sum of squares for the
// global gradient norm.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace keel::kernels {

struct AdamWStep {
  double lr = 0;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0;  // applied as p -= lr * wd * p (decoupled)
  int64_t step = 1;         // 1-based, for bias correction
  double grad_scale = 1.0;  // clipping coefficient folded into the pass
};

// param f32/bf16/f16; grad same shape (any float dtype); m, v f32 moments.
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& hp);

// adamw_step on many tensors at once: params[i], grads[i], m[i] and v[i]
// are checked and updated (in place, through the shared storage) as by
// adamw_step, with one set of hyperparameters; all on one device. On CUDA
// the tensors go to the device as one table and are updated by one launch
// per (param dtype, grad dtype) pair present; on the CPU it is a loop.
void adamw_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                      const AdamWStep& hp);

// sum(x^2) accumulated in double.
double sum_squares(const Tensor& x);

// The sum over tensors of sum(x^2), in double, all on one device: the
// global gradient norm's square. On the CPU the tensors' sums are added in
// order (so it equals adding sum_squares of each); on CUDA every tensor's
// fixed block partials go to one buffer and are added by one block, so the
// host waits once, not once per tensor. Deterministic on both.
double sum_squares_multi(const std::vector<Tensor>& xs);

}  // namespace keel::kernels
