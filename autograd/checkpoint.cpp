// Activation recomputation. The forward runs under NoGradGuard, so none of
// fn's intermediates are kept; one node remembers the inputs, the positions
// of the generators fn draws from and the autocast dtype. Its backward
// replays fn from those positions with grad on (same dropout masks), runs a
// nested backward through the fresh graph (parameters used by fn accumulate
// their .grad there) and returns the inputs' gradients.
#include <algorithm>

#include "autograd/autocast.h"
#include "autograd/ops.h"

namespace keel {

namespace {

// Generators and their (seed, offset) states.
struct Streams {
  std::vector<Generator*> gens;
  std::vector<std::pair<uint64_t, uint64_t>> states;

  explicit Streams(std::vector<Generator*> g) : gens(std::move(g)) {
    for (Generator* x : gens) states.emplace_back(x->seed(), x->offset());
  }
  void restore() const {
    for (size_t i = 0; i < gens.size(); ++i) gens[i]->set_state(states[i].first, states[i].second);
  }
};

}  // namespace

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                               const std::vector<Generator*>& generators) {
  if (!grad_mode_enabled()) return fn(inputs);
  std::vector<Generator*> gens = {&default_generator()};
  for (Generator* g : generators) {
    KEEL_CHECK(g != nullptr, "checkpoint: a null generator in the list of streams to replay");
    if (std::find(gens.begin(), gens.end(), g) == gens.end()) gens.push_back(g);
  }
  const Streams at_forward(gens);
  const DType compute = autocast_dtype();  // the recompute runs at the same precision
  std::vector<Tensor> outputs;
  {
    NoGradGuard no_grad;
    outputs = fn(inputs);
  }
  std::vector<Tensor> saved;
  for (const Tensor& t : inputs) saved.push_back(t.defined() ? t.detach() : Tensor());
  const size_t n_out = outputs.size();
  record(
      "checkpoint", inputs, outputs,
      [fn, saved, at_forward, compute, n_out](BackwardCtx& c) {
        std::vector<Tensor> in;
        for (size_t i = 0; i < saved.size(); ++i) {
          Tensor d = saved[i].defined() ? saved[i].detach() : Tensor();
          if (d.defined() && c.needs(i)) d.set_requires_grad(true);
          in.push_back(d);
        }
        const Streams after(at_forward.gens);
        at_forward.restore();
        std::vector<Tensor> outs;
        {
          EnableGradGuard grad_on;
          AutocastGuard precision(compute);
          outs = fn(in);
        }
        after.restore();
        KEEL_CHECK(outs.size() == n_out, "checkpoint: fn returned ", outs.size(),
                   " outputs on recomputation but ", n_out, " the first time");
        std::vector<Tensor> roots, grads;
        for (size_t i = 0; i < outs.size(); ++i) {
          if (!outs[i].requires_grad()) continue;
          roots.push_back(outs[i]);
          grads.push_back(c.grad(i));
        }
        if (!roots.empty()) run_backward(roots, grads, false);
        std::vector<Tensor> result;
        for (const Tensor& t : in) result.push_back(t.defined() ? t.grad() : Tensor());
        return result;
      },
      /*always=*/true);
  return outputs;
}

}  // namespace keel
