// Differentiable fused attention. The node saves q, k, v, the output and the
// log-sum-exp (O(T) per row, never the T x T probabilities); backward
// recomputes the probabilities block by block. Both outputs carry gradients:
// a gradient reaching lse (as in ring attention's merge) enters the same
// kernel through its dlse term.
//
// attention_unfused composes the same attention from differentiable ops,
// probabilities included, so that dropout can act on them.
#include "kernels/attention.h"

#include <cmath>
#include <limits>

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

namespace {

// 0 where query i sees key j (j <= i + Tk - Tq, the end-aligned causal mask
// of kernels/attention.h), -inf elsewhere; added to the scores, it gives the
// masked keys probability 0. Every row keeps at least one key (Tq <= Tk).
Tensor causal_mask(int64_t Tq, int64_t Tk, DType dtype, Device device) {
  std::vector<float> m(size_t(Tq * Tk), 0.0f);
  for (int64_t i = 0; i < Tq; ++i)
    for (int64_t j = i + (Tk - Tq) + 1; j < Tk; ++j)
      m[size_t(i * Tk + j)] = -std::numeric_limits<float>::infinity();
  return from_vector(m, {Tq, Tk}).to(dtype).to(device);  // (Tq, Tk)
}

}  // namespace

Tensor attention_unfused(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                         double scale, double dropout_p, bool training, Generator& gen,
                         const DropoutBox& box) {
  KEEL_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && k.sizes() == v.sizes() &&
                 q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3),
             "attention_unfused: expected q (B, H, Tq, D) and k, v (B, H, Tk, D), got q ",
             q.describe(), ", k ", k.describe(), ", v ", v.describe());
  const int64_t Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  KEEL_CHECK(!causal || Tq <= Tk, "attention_unfused: causal attention needs Tq <= Tk, got Tq ", Tq,
             " and Tk ", Tk);
  const double s = scale > 0 ? scale : 1.0 / std::sqrt(double(D));
  Tensor scores = mul_scalar(matmul(q, transpose(k, 2, 3)), s);  // (B, H, Tq, Tk)
  if (causal) scores = add(scores, causal_mask(Tq, Tk, scores.dtype(), scores.device()));
  Tensor probs = dropout(softmax(scores, -1), dropout_p, training, gen, box);  // (B, H, Tq, Tk)
  return matmul(probs, v);                                                // (B, H, Tq, D)
}

}  // namespace keel
