// Module: named parameters (each with its ParamSpec: sharding and weight
// decay, nn/param_spec.h) and buffers, child modules, train/eval mode and a
// state dict with stable dotted names ("blocks.3.attn.qkv.weight"). Names
// follow registration order, so every rank and every run lists them alike.
// A sharded parameter's tensor is this rank's local shard; its spec says
// where that lies in the logical tensor.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops.h"
#include "nn/param_spec.h"

namespace keel::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // This rank's tensors (local shards of sharded parameters).
  NamedTensors named_parameters() const;
  // Every parameter's spec, in named_parameters() order, with `logical`
  // filled in (a replicated parameter's is its own shape).
  std::vector<std::pair<std::string, ParamSpec>> named_parameter_specs() const;
  // Names of the parameters whose spec asks for weight decay (matrices of
  // Linear layers; not norms, biases or embeddings).
  std::vector<std::string> decayed_parameter_names() const;
  std::vector<Tensor> parameters() const;
  NamedTensors named_buffers() const;
  // Parameters then buffers.
  NamedTensors state_dict() const;
  // Copies every tensor of `state` into the module's tensor of the same name.
  // A missing or extra name, or a shape mismatch, is a keel::Error naming it.
  void load_state_dict(const NamedTensors& state);
  int64_t num_parameters() const;

  // Moves every parameter and buffer to `device` in place (layers keep their
  // handles); gradients are dropped. The first parameter's device otherwise.
  void to(Device device);
  Device device() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();

 protected:
  // Registers a leaf that requires grad; returns the same handle. With a
  // spec whose logical shape is set, `t` must have local_shape(spec) (a
  // keel::Error naming the parameter otherwise); an empty logical shape is
  // t's own, and then the parameter may not be sharded.
  Tensor register_parameter(const std::string& name, Tensor t, ParamSpec spec);
  // A replicated parameter, with or without weight decay.
  Tensor register_parameter(const std::string& name, Tensor t, bool weight_decay = false);
  Tensor register_buffer(const std::string& name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    check_name(name);
    children_.emplace_back(name, m);
    return m;
  }

 private:
  void check_name(const std::string& name) const;
  void collect(const std::string& prefix, bool params, NamedTensors& out) const;
  void collect_specs(const std::string& prefix,
                     std::vector<std::pair<std::string, ParamSpec>>& out) const;

  NamedTensors params_;
  std::vector<ParamSpec> specs_;  // one per entry of params_, logical filled in
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// A list of modules named "0", "1", ...
template <typename M>
class ModuleList : public Module {
 public:
  void push_back(std::shared_ptr<M> m) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(m)));
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) const { return *items_[i]; }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

// Normal(0, std) init drawn from `gen` (Philox: identical on every rank).
Tensor init_normal(const Shape& shape, double std, Generator& gen);
// This rank's shard of init_normal(spec.logical, std, gen), bit for bit, in
// local_shape(spec) (drawn by its boxes, randn_boxes): every layout starts
// from the serial weights. Consumes `gen` as the full draw does. The spec's
// logical shape must be set (a scalar's: use the Shape overload).
Tensor init_normal(const ParamSpec& spec, double std, Generator& gen);
// A braced shape ({out, in}, {1}) is a Shape, never a ParamSpec aggregate.
inline Tensor init_normal(std::initializer_list<int64_t> shape, double std, Generator& gen) {
  return init_normal(Shape(shape), std, gen);
}

}  // namespace keel::nn
