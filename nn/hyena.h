// The Hyena operator (Poli et al. 2023, "Hyena Hierarchy"), a drop-in for
// causal attention built from long implicit convolutions and gates:
//
//   (x_1, ..., x_N, v) = short_conv(in_proj(u))       C -> (N+1) C channels
//   v <- h_i * (v . x_i) + D_i (v . x_i)   for i = N, ..., 2  (long causal convs, FFT)
//   y  = out_proj(v . x_1)
//
// N is the order. The filters h_2..h_N ((N-1) C channels of length T) are
// not parameters: HyenaFilter generates them every step from positional
// features of t through a small MLP with Sin activations (one learnable
// frequency), times an exponential decay that is fast in the first channels
// and slow in the last. D (the filter's `bias`) is the skip term of each
// convolution. Everything runs in the (B, channels, T) layout, the one the
// convolutions want; the channel axis is where tensor parallelism will
// split the operator, and the sequence axis is walked only by the
// convolutions.
#pragma once

#include "nn/layers.h"

namespace keel::nn {

struct HyenaConfig {
  int64_t d_model = 0;        // C
  int64_t l_max = 0;          // longest sequence; the filters' positions span it
  int64_t order = 2;          // N >= 2
  int64_t filter_order = 64;  // width of the filter MLP
  int64_t emb_dim = 3;  // positional features: t, then (emb_dim - 1) / 2 cos/sin bands; odd >= 3
  int64_t filter_inner_layers =
      2;                           // hidden (filter_order -> filter_order) layers of the filter MLP
  int64_t short_filter_order = 3;  // taps of the short depthwise causal conv
  double filter_freq = 1.0;        // the Sin activations' initial frequency
  bool modulate = true;            // exponential-decay modulation of the filters
  double fast_decay_pct = 0.3, slow_decay_pct = 1.5, decay_target = 1e-2;
  double modulation_shift = 0.0;
  double filter_dropout = 0.0;  // dropout on the generated filter taps
  double dropout = 0.0;         // dropout on each gated stream v . x_i before its convolution
  bool bias = true;             // biases of the projections
  double init_std = 0.02, proj_init_std = 0.02;

  void validate() const;  // keel::Error naming the bad field (as model.hyena.<field>)
};

// Positional features (L, emb_dim), f32: t_l = l / (L - 1), then cos and
// -sin of 2 pi f_k l / L for emb_dim / 2 frequencies f_k evenly spaced in
// [1e-4, bands - 1]. Also the t column alone (L, 1) in `t` when given.
Tensor hyena_positional_features(int64_t L, int64_t emb_dim, Tensor* t = nullptr);

// Generates the (channels, L) filters of an operator.
class HyenaFilter : public Module {
 public:
  HyenaFilter(const HyenaConfig& cfg, int64_t channels, Generator& gen,
              const DropoutStreams& rng = {});
  // The first L <= l_max taps of every channel's filter: (channels, L).
  Tensor forward(int64_t L) const;
  // emb_dim -> filter_order, then filter_inner_layers of filter_order ->
  // filter_order, each followed by sin(freq * .); Hyena leaves the filter
  // MLP out of weight decay.
  std::shared_ptr<ModuleList<Linear>> mlp;
  Tensor freq;                  // (filter_order) shared by every Sin activation
  std::shared_ptr<Linear> out;  // (channels, filter_order), no bias
  Tensor bias;                  // (channels) the D term of each convolution

 private:
  HyenaConfig cfg_;
  int64_t channels_;
  // Constants, moved to the parameters' device by the first forward there.
  mutable Tensor z_;       // (l_max, emb_dim) positional features, f32
  mutable Tensor window_;  // (l_max, channels) decay + shift, f32; undefined unless modulate
  std::shared_ptr<Dropout> drop_;
};

class HyenaOperator : public Module {
 public:
  HyenaOperator(const HyenaConfig& cfg, Generator& gen, const DropoutStreams& rng = {});
  // u (B, T, C) -> (B, T, C), T <= l_max.
  Tensor forward(const Tensor& u) const;
  std::shared_ptr<Linear> in_proj;             // (N+1) C <- C
  std::shared_ptr<CausalConv1d> short_filter;  // (N+1) C channels, short_filter_order taps
  std::shared_ptr<HyenaFilter> filter;         // (N-1) C channels
  std::shared_ptr<Linear> out_proj;            // C <- C
  const HyenaConfig& config() const { return cfg_; }

 private:
  HyenaConfig cfg_;
  std::shared_ptr<Dropout> drop_;
};

}  // namespace keel::nn
