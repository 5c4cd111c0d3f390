// The backward engine and the autograd parts of Tensor.
#include <algorithm>
#include <atomic>
#include <queue>
#include <unordered_map>

#include "autograd/autograd.h"
#include "kernels/elementwise.h"

namespace keel {

namespace {
thread_local bool t_grad_enabled = true;
std::atomic<uint64_t> g_next_seq{0};

// A node that adds incoming gradients into a leaf's .grad.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(const Tensor& leaf)
      : Node("AccumulateGrad", {TensorMeta::of(leaf)}), leaf_(leaf.impl_shared()) {}
  std::vector<Tensor> apply(std::vector<Tensor>& grads) override {
    auto impl = leaf_.lock();
    if (!impl) return {};  // the leaf is gone; nobody can read its gradient
    Tensor leaf(impl);
    AutogradMeta& m = *impl->autograd;
    const Tensor& g = grads[0];
    KEEL_ASSERT(g.sizes() == leaf.sizes(), "gradient ", g.shape_string(), " for leaf ",
                leaf.describe());
    if (!m.grad.defined()) {
      m.grad = empty(leaf.sizes(), leaf.dtype(), leaf.device());
      m.grad.copy_(g);
    } else {
      kernels::add_(m.grad, g.dtype() == m.grad.dtype() ? g : g.to(m.grad.dtype()));
    }
    for (const GradHook& hook : m.hooks) hook(leaf);
    return {};
  }

 private:
  std::weak_ptr<TensorImpl> leaf_;
};

// A node whose backward is a lambda over saved state.
class FunctionNode final : public Node {
 public:
  FunctionNode(const char* name, std::vector<TensorMeta> outputs, std::vector<TensorMeta> inputs,
               BackwardFn fn)
      : Node(name, std::move(outputs)), inputs_(std::move(inputs)), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(std::vector<Tensor>& grads) override {
    BackwardCtx ctx(grads, next());
    std::vector<Tensor> out = fn_(ctx);
    KEEL_ASSERT(out.size() == next().size(), name(), " returned ", out.size(),
                " gradients for ", next().size(), " inputs");
    for (size_t i = 0; i < out.size(); ++i) {
      if (!next()[i].node || !out[i].defined()) continue;
      KEEL_ASSERT(out[i].sizes() == inputs_[i].sizes, name(), " gradient ", i, " has shape ",
                  out[i].shape_string(), ", input has ", shape_str(inputs_[i].sizes));
    }
    return out;
  }
  void release() override {
    fn_ = nullptr;
    mark_released();
  }

 private:
  std::vector<TensorMeta> inputs_;
  BackwardFn fn_;
};

AutogradMeta& meta(const Tensor& t) {
  auto& p = t.impl_shared()->autograd;
  if (!p) p = std::make_shared<AutogradMeta>();
  return *p;
}

Edge edge_for(const Tensor& t) {
  if (!t.defined()) return {};
  AutogradMeta* m = t.impl_ptr()->autograd.get();
  if (!m) return {};
  if (m->grad_fn) return {m->grad_fn, m->output_nr};
  if (!m->requires_grad) return {};
  auto acc = m->accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t);
    m->accumulator = acc;
  }
  return {acc, 0};
}

}  // namespace

Node::Node(std::string name, std::vector<TensorMeta> outputs)
    : name_(std::move(name)), seq_(g_next_seq++), outputs_(std::move(outputs)) {}

bool grad_mode_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }
EnableGradGuard::EnableGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { t_grad_enabled = prev_; }

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs, BackwardFn fn, bool always) {
  if (always ? !t_grad_enabled : !any_requires_grad(inputs)) return;
  std::vector<TensorMeta> out_meta, in_meta;
  for (const Tensor& o : outputs) out_meta.push_back(TensorMeta::of(o));
  for (const Tensor& i : inputs) in_meta.push_back(i.defined() ? TensorMeta::of(i) : TensorMeta{});
  auto node = std::make_shared<FunctionNode>(name, std::move(out_meta), std::move(in_meta),
                                             std::move(fn));
  for (const Tensor& i : inputs) node->next().push_back(edge_for(i));
  for (size_t k = 0; k < outputs.size(); ++k) {
    AutogradMeta& m = meta(outputs[k]);
    KEEL_ASSERT(!m.grad_fn, name, ": output ", k, " already has a history");
    if (!is_floating(outputs[k].dtype())) continue;  // integer outputs carry no gradient
    m.grad_fn = node;
    m.output_nr = int(k);
    m.requires_grad = true;
  }
}

void register_grad_hook(const Tensor& leaf, GradHook hook) {
  KEEL_CHECK(leaf.requires_grad() && leaf.is_leaf(), "register_grad_hook: ", leaf.describe(),
             " is not a leaf that requires grad");
  meta(leaf).hooks.push_back(std::move(hook));
}

Tensor accumulate(const Tensor& acc, const Tensor& g) {
  if (!acc.defined()) return g;
  if (!g.defined()) return acc;
  return kernels::binary(kernels::BinaryOp::Add, acc, g);
}

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
                  bool retain_graph) {
  KEEL_ASSERT(roots.size() == grads.size());
  NoGradGuard no_grad;
  // Dependencies: how many edges point at each node from nodes reachable from the roots.
  std::unordered_map<Node*, int> deps;
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::vector<Node*> stack;
  auto compare = [](Node* a, Node* b) { return a->sequence() < b->sequence(); };
  std::priority_queue<Node*, std::vector<Node*>, decltype(compare)> ready(compare);
  std::unordered_map<Node*, std::shared_ptr<Node>> keep;  // holds nodes alive during the run

  for (size_t r = 0; r < roots.size(); ++r) {
    Edge e = edge_for(roots[r]);
    KEEL_CHECK(e.node, "backward: tensor ", r, " (", roots[r].describe(),
               ") does not require grad and has no grad_fn");
    auto& buf = buffers[e.node.get()];
    buf.resize(e.node->outputs().size());
    buf[size_t(e.slot)] = accumulate(buf[size_t(e.slot)], grads[r]);
    if (!keep.count(e.node.get())) {
      keep[e.node.get()] = e.node;
      stack.push_back(e.node.get());
    }
  }
  std::vector<Node*> roots_nodes = stack;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (Edge& e : n->next()) {
      if (!e.node) continue;
      if (deps[e.node.get()]++ == 0 && !keep.count(e.node.get())) {
        keep[e.node.get()] = e.node;
        stack.push_back(e.node.get());
      }
    }
  }
  for (Node* n : roots_nodes)
    if (deps[n] == 0) ready.push(n);

  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    KEEL_CHECK(!n->released(), "backward: the graph through ", n->name(),
               " was already freed by an earlier backward; call backward(..., "
               "retain_graph=true) the first time to run it twice");
    std::vector<Tensor> in = std::move(buffers[n]);
    buffers.erase(n);
    in.resize(n->outputs().size());
    for (size_t i = 0; i < in.size(); ++i)
      if (!in[i].defined()) {
        const TensorMeta& m = n->outputs()[i];
        in[i] = zeros(m.sizes, m.dtype, m.device);
      }
    std::vector<Tensor> out = n->apply(in);
    in.clear();
    if (!retain_graph) n->release();
    auto& next = n->next();
    for (size_t i = 0; i < next.size(); ++i) {
      Node* child = next[i].node.get();
      if (!child) continue;
      if (i < out.size() && out[i].defined()) {
        auto& buf = buffers[child];
        buf.resize(child->outputs().size());
        Tensor& slot = buf[size_t(next[i].slot)];
        slot = accumulate(slot, out[i]);
      }
      if (--deps[child] == 0) ready.push(child);
    }
  }
}

// ---- Tensor's autograd members ----

bool Tensor::requires_grad() const {
  auto* m = impl_ptr() ? impl_ptr()->autograd.get() : nullptr;
  return m && (m->requires_grad || m->grad_fn);
}

Tensor& Tensor::set_requires_grad(bool enabled) {
  KEEL_CHECK(!enabled || is_floating(dtype()), "set_requires_grad: only floating tensors can ",
             "require gradients, got ", describe());
  AutogradMeta& m = meta(*this);
  KEEL_CHECK(!m.grad_fn || enabled, "set_requires_grad(false) on a non-leaf tensor; use detach()");
  m.requires_grad = enabled;
  return *this;
}

Tensor Tensor::grad() const {
  auto* m = impl_ptr()->autograd.get();
  return m ? m->grad : Tensor();
}

void Tensor::set_grad(const Tensor& g) const {
  KEEL_CHECK(!g.defined() || g.sizes() == sizes(), "set_grad: gradient ", g.describe(),
             " does not match ", describe());
  meta(*this).grad = g;
}

bool Tensor::is_leaf() const {
  auto* m = impl_ptr()->autograd.get();
  return !m || !m->grad_fn;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  Tensor g = gradient;
  if (!g.defined()) {
    KEEL_CHECK(numel() == 1, "backward: ", describe(),
               " is not a scalar; pass the gradient of the output explicitly");
    g = ones(sizes(), dtype(), device());
  }
  KEEL_CHECK(g.sizes() == sizes(), "backward: gradient ", g.describe(), " does not match ",
             describe());
  run_backward({*this}, {g}, retain_graph);
}

}  // namespace keel
