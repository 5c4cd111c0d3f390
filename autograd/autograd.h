// The define-by-run tape. A differentiable op records a Node holding only
// what its backward needs; Tensor::backward() walks the nodes in reverse
// creation order, sums gradients per node and accumulates into the .grad of
// leaves. After backward the graph is freed unless retain_graph is set.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace keel {

class Node;

struct Edge {
  std::shared_ptr<Node> node;  // null: that input needs no gradient
  int slot = 0;                // which output of `node` the gradient belongs to
};

// Called after a backward pass has finished accumulating a leaf's gradient
// (once per leaf per backward), e.g. to launch its gradient all-reduce
// while the rest of backward runs.
using GradHook = std::function<void(const Tensor& leaf)>;

struct AutogradMeta {
  bool requires_grad = false;
  std::vector<GradHook> hooks;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  int output_nr = 0;
  std::weak_ptr<Node> accumulator;  // leaves: the node that adds into grad
};

// Shape/dtype/device of a tensor a node needs to rebuild zeros for.
struct TensorMeta {
  Shape sizes;
  DType dtype = DType::F32;
  Device device;
  static TensorMeta of(const Tensor& t) { return {t.sizes(), t.dtype(), t.device()}; }
};

class Node {
 public:
  Node(std::string name, std::vector<TensorMeta> outputs);
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // grads[i] is the gradient of output i (zeros if none flowed); returns one
  // gradient per entry of next() (undefined where next()[i].node is null).
  virtual std::vector<Tensor> apply(std::vector<Tensor>& grads) = 0;
  // Frees saved state after a backward that does not retain the graph; a
  // node whose state is gone marks itself released.
  virtual void release() {}

  const std::string& name() const { return name_; }
  uint64_t sequence() const { return seq_; }
  std::vector<Edge>& next() { return next_; }
  const std::vector<TensorMeta>& outputs() const { return outputs_; }
  bool released() const { return released_; }
  void mark_released() { released_ = true; }

 private:
  std::string name_;
  uint64_t seq_;
  std::vector<Edge> next_;
  std::vector<TensorMeta> outputs_;
  bool released_ = false;
};

// What a backward function sees: the output gradients and which inputs want one.
class BackwardCtx {
 public:
  BackwardCtx(std::vector<Tensor>& grads, const std::vector<Edge>& next)
      : grads_(grads), next_(next) {}
  const Tensor& grad(size_t output = 0) const { return grads_[output]; }
  bool needs(size_t input) const { return next_[input].node != nullptr; }

 private:
  std::vector<Tensor>& grads_;
  const std::vector<Edge>& next_;
};

using BackwardFn = std::function<std::vector<Tensor>(BackwardCtx&)>;

// ---- grad mode ----
bool grad_mode_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

// True if grad mode is on and any input requires a gradient.
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Records `outputs` as produced from `inputs` (inputs that need no gradient
// may be undefined). `fn` must capture only what backward needs, and outputs
// only detached (t.detach()), so the graph holds no cycles.
// `always` records even when no input requires a gradient (while grad mode
// is on), for nodes whose backward reaches parameters by other paths.
void record(const char* name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs, BackwardFn fn, bool always = false);

// Runs backward from several roots at once.
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
                  bool retain_graph);

// Adds a hook to a leaf that requires grad (see GradHook).
void register_grad_hook(const Tensor& leaf, GradHook hook);

// Adds `g` into `acc` (accumulating gradients; `acc` may be undefined).
Tensor accumulate(const Tensor& acc, const Tensor& g);

}  // namespace keel
