#include "nn/hyena.h"

#include <cmath>
#include <numbers>
#include <vector>

namespace keel::nn {

void HyenaConfig::validate() const {
  KEEL_CHECK(d_model > 0, "model.hyena: the width (n_embd) must be positive, got ", d_model);
  KEEL_CHECK(l_max > 0, "model.hyena: the longest sequence (block_size) must be positive, got ",
             l_max);
  KEEL_CHECK(order >= 2, "model.hyena.order must be >= 2 (one long convolution at least), got ",
             order);
  KEEL_CHECK(emb_dim >= 3 && emb_dim % 2 == 1,
             "model.hyena.emb_dim must be odd and >= 3 (t, then cos/sin pairs), got ", emb_dim);
  KEEL_CHECK(filter_order > 0, "model.hyena.filter_order must be positive, got ", filter_order);
  KEEL_CHECK(filter_inner_layers >= 0, "model.hyena.filter_inner_layers must be >= 0, got ",
             filter_inner_layers);
  KEEL_CHECK(short_filter_order > 0, "model.hyena.short_filter_order must be positive, got ",
             short_filter_order);
  KEEL_CHECK(fast_decay_pct > 0 && slow_decay_pct > 0,
             "model.hyena.fast_decay_pct and slow_decay_pct must be positive, got ", fast_decay_pct,
             " and ", slow_decay_pct);
  KEEL_CHECK(decay_target > 0 && decay_target < 1,
             "model.hyena.decay_target must be in (0, 1), got ", decay_target);
  KEEL_CHECK(filter_dropout >= 0 && filter_dropout < 1,
             "model.hyena.filter_dropout must be in [0, 1), got ", filter_dropout);
  KEEL_CHECK(dropout >= 0 && dropout < 1, "model.hyena: dropout must be in [0, 1), got ", dropout);
}

Tensor hyena_positional_features(int64_t L, int64_t emb_dim, Tensor* t) {
  KEEL_CHECK(L > 0 && emb_dim >= 3 && emb_dim % 2 == 1,
             "hyena_positional_features: need L > 0 and an odd emb_dim >= 3, got L ", L,
             ", emb_dim ", emb_dim);
  const int64_t bands = (emb_dim - 1) / 2;
  std::vector<float> z(size_t(L * emb_dim));
  std::vector<float> tv(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    const double tl = L > 1 ? double(l) / double(L - 1) : 0.0;  // linspace(0, 1, L)
    const double w = 2.0 * std::numbers::pi * double(l) / double(L);
    float* row = &z[size_t(l * emb_dim)];
    row[0] = float(tl);
    tv[size_t(l)] = float(tl);
    for (int64_t k = 0; k < bands; ++k) {
      // linspace(1e-4, bands - 1, bands)
      const double f =
          bands > 1 ? 1e-4 + double(k) * (double(bands - 1) - 1e-4) / double(bands - 1) : 1e-4;
      row[1 + k] = float(std::cos(f * w));
      row[1 + bands + k] = float(-std::sin(f * w));
    }
  }
  if (t) *t = from_vector<float>(tv, {L, 1});  // (L, 1)
  return from_vector<float>(z, {L, emb_dim});  // (L, emb_dim)
}

HyenaFilter::HyenaFilter(const HyenaConfig& cfg, int64_t channels, Generator& gen,
                         const DropoutStreams& rng)
    : cfg_(cfg), channels_(channels) {
  cfg_.validate();
  KEEL_CHECK(channels > 0, "HyenaFilter: channels must be positive, got ", channels);
  // The filter MLP is drawn with PyTorch's default Linear variance (1 / (3
  // fan_in)), so the generated filters start at O(1) rather than near zero.
  auto std_of = [](int64_t fan_in) { return 1.0 / std::sqrt(3.0 * double(fan_in)); };
  mlp = register_module("mlp", std::make_shared<ModuleList<Linear>>());
  for (int64_t i = 0; i <= cfg_.filter_inner_layers; ++i) {
    const int64_t in = i == 0 ? cfg_.emb_dim : cfg_.filter_order;
    mlp->push_back(std::make_shared<Linear>(in, cfg_.filter_order, true, gen, std_of(in),
                                            /*weight_decay=*/false));
  }
  freq = register_parameter("freq", full({cfg_.filter_order}, cfg_.filter_freq));
  out = register_module("out", std::make_shared<Linear>(cfg_.filter_order, channels, false, gen,
                                                        std_of(cfg_.filter_order),
                                                        /*weight_decay=*/false));
  bias = register_parameter("bias", randn({channels}, gen));  // (channels)

  Tensor t;
  z_ = hyena_positional_features(cfg_.l_max, cfg_.emb_dim, &t);  // (l_max, emb_dim)
  // Window (l_max, channels): exp(-t |delta_c|) + shift, delta_c evenly
  // spaced from log(target) / slow_decay_pct (channel 0, the slowest decay)
  // to log(target) / fast_decay_pct (the last channel, the fastest): the
  // filter of the last channel has fallen to `target` by t = fast_decay_pct.
  if (cfg_.modulate) {
    std::vector<float> win(static_cast<size_t>(cfg_.l_max * channels));
    const double lo = std::log(cfg_.decay_target) / cfg_.slow_decay_pct;
    const double hi = std::log(cfg_.decay_target) / cfg_.fast_decay_pct;
    const std::vector<float> tv = t.to_vector<float>();
    for (int64_t l = 0; l < cfg_.l_max; ++l)
      for (int64_t c = 0; c < channels; ++c) {
        const double delta = channels > 1 ? lo + double(c) * (hi - lo) / double(channels - 1) : lo;
        win[size_t(l * channels + c)] =
            float(std::exp(-double(tv[size_t(l)]) * std::fabs(delta)) + cfg_.modulation_shift);
      }
    window_ = from_vector<float>(win, {cfg_.l_max, channels});  // (l_max, channels)
  }
  drop_ = register_module("drop", std::make_shared<Dropout>(cfg_.filter_dropout, rng.replicated));
}

Tensor HyenaFilter::forward(int64_t L) const {
  KEEL_CHECK(L >= 1 && L <= cfg_.l_max, "HyenaFilter: ", L,
             " taps asked for, but the filters span model.hyena l_max = block_size ", cfg_.l_max);
  // The constants follow the parameters to their device once, not every step.
  if (!(z_.device() == freq.device())) {
    z_ = z_.to(freq.device());
    if (window_.defined()) window_ = window_.to(freq.device());
  }
  Tensor h = narrow(z_, 0, 0, L);                                    // (L, emb_dim)
  for (const auto& lin : *mlp) h = sin(mul(freq, lin->forward(h)));  // (L, filter_order)
  h = out->forward(h);                                               // (L, channels)
  if (window_.defined()) h = mul(h, narrow(window_, 0, 0, L));
  return drop_->forward(transpose(h, 0, 1));  // (channels, L)
}

HyenaOperator::HyenaOperator(const HyenaConfig& cfg, Generator& gen, const DropoutStreams& rng)
    : cfg_(cfg) {
  cfg_.validate();
  const int64_t C = cfg_.d_model, N = cfg_.order;
  in_proj = register_module(
      "in_proj", std::make_shared<Linear>(C, (N + 1) * C, cfg_.bias, gen, cfg_.init_std));
  short_filter = register_module(
      "short_filter",
      std::make_shared<CausalConv1d>((N + 1) * C, cfg_.short_filter_order, true, gen));
  filter = register_module("filter", std::make_shared<HyenaFilter>(cfg_, (N - 1) * C, gen, rng));
  out_proj = register_module("out_proj",
                             std::make_shared<Linear>(C, C, cfg_.bias, gen, cfg_.proj_init_std));
  drop_ = register_module("drop", std::make_shared<Dropout>(cfg_.dropout, rng.replicated));
}

Tensor HyenaOperator::forward(const Tensor& u) const {
  const int64_t C = cfg_.d_model, N = cfg_.order;
  KEEL_CHECK(u.dim() == 3 && u.size(2) == C, "HyenaOperator: expected u (B, T, ", C, "), got ",
             u.describe());
  const int64_t T = u.size(1);
  KEEL_CHECK(T <= cfg_.l_max, "HyenaOperator: sequence length ", T,
             " exceeds the filters' length (block_size) ", cfg_.l_max);
  // (B, (N+1) C, T): the projection read channel-major, then the short conv.
  Tensor z = short_filter->forward(transpose(in_proj->forward(u), 1, 2));
  std::vector<Tensor> x = split(z, std::vector<int64_t>(size_t(N + 1), C), 1);  // x_1..x_N, v
  Tensor k;  // ((N-1) C, T) f32: long filters are generated and applied in f32
  {
    AutocastGuard f32(DType::F32);
    k = filter->forward(T);
  }
  Tensor v = x[size_t(N)];
  for (int64_t i = N - 1, o = 0; i >= 1; --i, ++o) {
    Tensor g = drop_->forward(mul(v, x[size_t(i)]));  // (B, C, T)
    Tensor y =
        fftconv(to_dtype(g, DType::F32), narrow(k, 0, o * C, C), narrow(filter->bias, 0, o * C, C));
    v = to_dtype(y, g.dtype());
  }
  Tensor y = transpose(mul(v, x[0]), 1, 2);  // (B, T, C)
  return out_proj->forward(y);
}

}  // namespace keel::nn
