// The Mamba mixer (Gu and Dao 2023, "Mamba: Linear-Time Sequence Modeling
// with Selective State Spaces"), Mamba-1's selective SSM block:
//
//   (x, z) = in_proj(u)                        C -> 2 D, D = expand * C
//   x = silu(conv1d(x))                        causal depthwise, d_conv taps
//   (dt, B, C) = x_proj(x)                     D -> dt_rank + 2 N
//   delta = softplus(dt_proj.weight dt + dt_proj.bias)
//   y = selective_scan(x, delta, A = -exp(A_log), B, C, D) * silu(z)
//   out = out_proj(y)                          D -> C
//
// The scan is the fused kernel (kernels/selective_scan.h): the (B, D, T, N)
// states never reach memory. For generation, step() advances one token
// from a per-layer state (the last d_conv - 1 conv inputs and the (D, N) SSM
// state), O(1) per token. Initialisation as Mamba's: dt_proj's bias is the
// inverse softplus of a dt drawn log-uniformly in [dt_min, dt_max] (floored
// at dt_init_floor), A_log = log(1..N) per channel (S4D-real), D = 1; A_log
// and D take no weight decay.
#pragma once

#include "nn/layers.h"

namespace keel::nn {

struct MambaConfig {
  int64_t d_model = 0;   // C
  int64_t d_state = 16;  // N
  int64_t d_conv = 4;    // taps of the causal conv
  double expand = 2.0;   // D = expand * C, which must be an integer
  int64_t dt_rank = 0;   // 0: ceil(C / 16)
  double dt_min = 1e-3, dt_max = 1e-1, dt_init_floor = 1e-4;
  bool bias = false;  // biases of in_proj and out_proj
  bool conv_bias = true;
  double init_std = 0.02, proj_init_std = 0.02;  // in_proj / x_proj, out_proj

  int64_t inner() const;  // D
  int64_t rank() const;   // dt_rank, resolved
  void validate() const;  // keel::Error naming the bad field (as model.mamba.<field>)
};

// One sequence batch's recurrent state of one mixer.
struct MambaState {
  Tensor conv;  // (B, D, d_conv - 1): the last conv inputs, oldest first
  Tensor ssm;   // (B, D, N) f32
};

class MambaMixer : public Module {
 public:
  MambaMixer(const MambaConfig& cfg, Generator& gen);
  // u (B, T, C) -> (B, T, C).
  Tensor forward(const Tensor& u) const;
  // Zeros for a batch of `batch` sequences on this mixer's device.
  MambaState initial_state(int64_t batch) const;
  // One token u (B, C) -> (B, C), advancing `state` (no autograd).
  Tensor step(const Tensor& u, MambaState& state) const;
  const MambaConfig& config() const { return cfg_; }

  std::shared_ptr<Linear> in_proj;       // (2 D, C)
  std::shared_ptr<CausalConv1d> conv1d;  // D channels, d_conv taps
  std::shared_ptr<Linear> x_proj;        // (dt_rank + 2 N, D), no bias
  std::shared_ptr<Linear> dt_proj;       // (D, dt_rank) + bias (D)
  Tensor A_log;                          // (D, N)
  Tensor D;                              // (D)
  std::shared_ptr<Linear> out_proj;      // (C, D)

 private:
  MambaConfig cfg_;
};

}  // namespace keel::nn
