#include "trainer/optim.h"

#include <algorithm>
#include <cmath>

namespace keel::trainer {

AdamW::AdamW(nn::NamedTensors params, const std::vector<std::string>& decayed, AdamWConfig cfg)
    : params_(std::move(params)), cfg_(cfg) {
  for (const auto& [name, p] : params_) {
    m_.push_back(zeros(p.sizes(), DType::F32, p.device()));
    v_.push_back(zeros(p.sizes(), DType::F32, p.device()));
    decay_.push_back(std::find(decayed.begin(), decayed.end(), name) != decayed.end());
  }
}

void AdamW::step(double lr, double grad_scale) {
  ++step_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor p = params_[i].second;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    kernels::AdamWStep hp{
        lr,    cfg_.beta1, cfg_.beta2, cfg_.eps, decay_[i] ? cfg_.weight_decay : 0.0,
        step_, grad_scale};
    kernels::adamw_step(p, g, m_[i], v_[i], hp);
  }
}

nn::NamedTensors AdamW::state() const {
  nn::NamedTensors out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i].first + "/m", m_[i]);
    out.emplace_back(params_[i].first + "/v", v_[i]);
  }
  return out;
}

double global_grad_norm(const nn::NamedTensors& params) {
  std::vector<Tensor> grads;
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (g.defined()) grads.push_back(g);
  }
  return std::sqrt(kernels::sum_squares_multi(grads));
}

double clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0 || norm <= max_norm) return 1.0;
  return max_norm / (norm + 1e-6);
}

LossScaler::LossScaler(LossScalerConfig cfg) : cfg_(cfg) {
  KEEL_CHECK(cfg_.static_scale >= 0 && cfg_.initial >= 1 && cfg_.window >= 1 &&
                 cfg_.min_scale > 0 && cfg_.min_scale <= cfg_.initial,
             "LossScaler: bad config (static ", cfg_.static_scale, ", initial ", cfg_.initial,
             ", window ", cfg_.window, ", min ", cfg_.min_scale, ")");
  scale_ = cfg_.static_scale > 0 ? cfg_.static_scale : cfg_.initial;
}

bool LossScaler::update(bool grads_finite) {
  if (cfg_.static_scale > 0) return true;
  if (!grads_finite) {
    scale_ = std::max(scale_ * 0.5, cfg_.min_scale);
    clean_ = 0;
    return false;
  }
  if (++clean_ >= cfg_.window) {
    scale_ *= 2.0;
    clean_ = 0;
  }
  return true;
}

void LossScaler::set_state(double scale, int64_t clean_steps) {
  KEEL_CHECK(scale > 0 && std::isfinite(scale) && clean_steps >= 0,
             "LossScaler: bad saved state (scale ", scale, ", clean steps ", clean_steps, ")");
  scale_ = cfg_.static_scale > 0 ? cfg_.static_scale : scale;
  clean_ = clean_steps;
}

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) return lr * double(step + 1) / double(warmup_steps);
  if (decay == "constant") return lr;
  const double min_lr = lr * min_lr_ratio;
  const int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress = std::clamp(double(step - warmup_steps) / double(span), 0.0, 1.0);
  if (decay == "linear") return lr - (lr - min_lr) * progress;
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace keel::trainer
