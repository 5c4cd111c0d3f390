// Differentiable fused attention. The node saves q, k, v, the output and the
// log-sum-exp (O(T) per row, never the T x T probabilities); backward
// recomputes the probabilities block by block. Both outputs carry gradients:
// a gradient reaching lse (as in ring attention's merge) enters the same
// kernel through its dlse term.
#include "kernels/attention.h"

#include "autograd/ops.h"

namespace keel {

std::pair<Tensor, Tensor> attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                    double scale) {
  std::pair<Tensor, Tensor> res = kernels::attention_forward(q, k, v, causal, scale);
  if (any_requires_grad({q, k, v})) {
    Tensor qs = q.detach(), ks = k.detach(), vs = v.detach();
    Tensor os = res.first.detach(), ls = res.second.detach();
    record("attention", {q, k, v}, {res.first, res.second},
           [qs, ks, vs, os, ls, causal, scale](BackwardCtx& c) {
             kernels::AttentionGrads g = kernels::attention_backward(qs, ks, vs, os, ls, c.grad(0),
                                                                     c.grad(1), causal, scale);
             return std::vector<Tensor>{c.needs(0) ? g.dq : Tensor(), c.needs(1) ? g.dk : Tensor(),
                                        c.needs(2) ? g.dv : Tensor()};
           });
  }
  return res;
}

}  // namespace keel
