#include "nn/module.h"

#include <set>

#include "kernels/elementwise.h"

namespace keel::nn {

void Module::check_name(const std::string& name) const {
  KEEL_CHECK(!name.empty() && name.find('.') == std::string::npos, "module member name '", name,
             "' must be non-empty and contain no '.'");
  auto taken = [&](const auto& list) {
    for (const auto& [n, _] : list)
      if (n == name) return true;
    return false;
  };
  KEEL_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), "module member '", name,
             "' registered twice");
}

Tensor Module::register_parameter(const std::string& name, Tensor t, ParamSpec spec) {
  check_name(name);
  KEEL_CHECK(t.defined(), "parameter '", name, "' is an undefined tensor");
  if (spec.logical.empty()) {
    KEEL_CHECK(!spec.sharded(), "parameter '", name, "' is sharded on dim ", spec.shard_dim,
               " but its ParamSpec has no logical shape (set spec.logical to the full shape)");
    spec.logical = t.sizes();
  }
  const std::string problem = param_spec_problem(spec);
  KEEL_CHECK(problem.empty(), "parameter '", name, "': ParamSpec (", describe(spec),
             "): ", problem);
  KEEL_CHECK(t.sizes() == local_shape(spec), "parameter '", name, "' is ", t.describe(),
             " but its ParamSpec (", describe(spec), ") gives this rank the local shape ",
             shape_str(local_shape(spec)));
  t.set_requires_grad(true);
  params_.emplace_back(name, t);
  specs_.push_back(std::move(spec));
  return t;
}

Tensor Module::register_parameter(const std::string& name, Tensor t, bool weight_decay) {
  ParamSpec spec;
  spec.decay = weight_decay;
  return register_parameter(name, std::move(t), std::move(spec));
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_name(name);
  buffers_.emplace_back(name, t);
  return t;
}

void Module::collect(const std::string& prefix, bool params, NamedTensors& out) const {
  for (const auto& [n, t] : params ? params_ : buffers_) out.emplace_back(prefix + n, t);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", params, out);
}

void Module::collect_specs(const std::string& prefix,
                           std::vector<std::pair<std::string, ParamSpec>>& out) const {
  for (size_t i = 0; i < params_.size(); ++i)
    out.emplace_back(prefix + params_[i].first, specs_[i]);
  for (const auto& [n, c] : children_) c->collect_specs(prefix + n + ".", out);
}

std::vector<std::pair<std::string, ParamSpec>> Module::named_parameter_specs() const {
  std::vector<std::pair<std::string, ParamSpec>> out;
  collect_specs("", out);
  return out;
}

std::vector<std::string> Module::decayed_parameter_names() const {
  std::vector<std::string> out;
  for (const auto& [name, spec] : named_parameter_specs())
    if (spec.decay) out.push_back(name);
  return out;
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, out);
  return out;
}

NamedTensors Module::state_dict() const {
  NamedTensors out = named_parameters();
  for (auto& nb : named_buffers()) out.push_back(nb);
  return out;
}

void Module::load_state_dict(const NamedTensors& state) {
  NamedTensors mine = state_dict();
  std::set<std::string> seen;
  for (const auto& [name, src] : state) {
    const Tensor* dst = nullptr;
    for (const auto& [n, t] : mine)
      if (n == name) dst = &t;
    KEEL_CHECK(dst != nullptr, "load_state_dict: unexpected tensor '", name, "' ", src.describe(),
               " (the model has no such parameter or buffer)");
    KEEL_CHECK(dst->sizes() == src.sizes(), "load_state_dict: tensor '", name, "' has shape ",
               src.shape_string(), " but the model expects ", dst->shape_string());
    Tensor d = *dst;
    NoGradGuard no_grad;
    d.copy_(src);
    seen.insert(name);
  }
  for (const auto& [n, t] : mine)
    KEEL_CHECK(seen.count(n), "load_state_dict: tensor '", n, "' ", t.describe(), " is missing");
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Tensor& p : parameters()) n += p.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::to(Device device) {
  zero_grad();
  for (const auto& [name, t] : state_dict()) t.move_to_(device);
}

Device Module::device() const {
  const NamedTensors ps = named_parameters();
  return ps.empty() ? Device::cpu() : ps.front().second.device();
}

void Module::zero_grad() {
  for (const Tensor& p : parameters()) p.set_grad(Tensor());
}

Tensor init_normal(const Shape& shape, double std, Generator& gen) {
  Tensor t = randn(shape, gen);
  kernels::mul_scalar_(t, std);
  return t;
}

Tensor init_normal(const ParamSpec& spec, double std, Generator& gen) {
  KEEL_CHECK(!spec.logical.empty(), "init_normal: the ParamSpec has no logical shape (",
             describe(spec), "); set spec.logical, or draw a scalar with the Shape overload");
  // (local_shape) from (n): the boxes' union in row-major order is the local layout.
  Tensor t = randn_boxes(spec.logical, shard_boxes(spec), gen).view(local_shape(spec));
  kernels::mul_scalar_(t, std);
  return t;
}

}  // namespace keel::nn
