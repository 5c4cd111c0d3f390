// Differentiable selective scan (kernels/selective_scan.h). The node keeps
// the inputs and the state entering every chunk of the forward, (B, D,
// T / chunk, N) f32, never the (B, D, T, N) states: the backward recomputes
// each chunk's states from its saved one. Both outputs carry gradients; one
// reaching last_state (a scan continued from this one) seeds the adjoint.
#include "kernels/selective_scan.h"

#include "autograd/ops.h"

namespace keel {

std::pair<Tensor, Tensor> selective_scan(const kernels::SelectiveScanArgs& a) {
  const std::vector<Tensor> inputs{a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, a.h0};
  if (!any_requires_grad(inputs)) {
    kernels::SelectiveScanOut out = kernels::selective_scan(a);
    return {out.y, out.last_state};
  }
  constexpr int64_t chunk = kernels::kSelectiveScanChunk;
  Tensor states;  // (B, D, nc, N)
  kernels::SelectiveScanOut out = kernels::selective_scan(a, &states, chunk);
  kernels::SelectiveScanArgs saved = a;
  for (Tensor* t : {&saved.u, &saved.delta, &saved.A, &saved.B, &saved.C, &saved.D, &saved.z,
                    &saved.delta_bias, &saved.h0})
    if (t->defined()) *t = t->detach();
  record("selective_scan", inputs, {out.y, out.last_state}, [saved, states, chunk](BackwardCtx& c) {
    kernels::SelectiveScanGrads g =
        kernels::selective_scan_backward(saved, c.grad(0), c.grad(1), states, chunk);
    const Tensor* gs[] = {&g.du, &g.ddelta, &g.dA,          &g.dB, &g.dC,
                          &g.dD, &g.dz,     &g.ddelta_bias, &g.dh0};
    std::vector<Tensor> res;
    for (size_t i = 0; i < 9; ++i) res.push_back(c.needs(i) ? *gs[i] : Tensor());
    return res;
  });
  return {out.y, out.last_state};
}

}  // namespace keel
