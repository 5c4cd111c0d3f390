// Activation recomputation. The forward runs under NoGradGuard, so none of
// fn's intermediates are kept; one node remembers the inputs and the default
// generator's position and the autocast dtype. Its backward replays fn from that position with grad
// on (same dropout masks), runs a nested backward through the fresh graph
// (parameters used by fn accumulate their .grad there) and returns the
// inputs' gradients.
#include "autograd/autocast.h"
#include "autograd/ops.h"

namespace keel {

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs) {
  if (!grad_mode_enabled()) return fn(inputs);
  Generator& gen = default_generator();
  const uint64_t seed = gen.seed(), offset = gen.offset();
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
      [fn, saved, seed, offset, compute, n_out](BackwardCtx& c) {
        std::vector<Tensor> in;
        for (size_t i = 0; i < saved.size(); ++i) {
          Tensor d = saved[i].defined() ? saved[i].detach() : Tensor();
          if (d.defined() && c.needs(i)) d.set_requires_grad(true);
          in.push_back(d);
        }
        Generator& g = default_generator();
        const uint64_t after_seed = g.seed(), after_offset = g.offset();
        g.set_state(seed, offset);
        std::vector<Tensor> outs;
        {
          EnableGradGuard grad_on;
          AutocastGuard precision(compute);
          outs = fn(in);
        }
        g.set_state(after_seed, after_offset);
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
