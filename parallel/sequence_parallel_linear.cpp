#include "parallel/sequence_parallel_linear.h"

#include "autograd/ops.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"
#include "parallel/collectives.h"

namespace keel::parallel {

namespace {

// Plain collectives: the differentiable ones on tensors that record nothing.
Tensor gathered(const Tensor& x, int64_t dim, Communicator& comm) {
  return gather_from_sequence_region(x.detach(), dim, comm);
}

}  // namespace

Tensor sequence_parallel_linear(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t dim,
                                Communicator& comm) {
  KEEL_CHECK(x.defined() && x.dim() >= 2,
             "sequence_parallel_linear: x must have a sequence dim, got ", x.describe());
  KEEL_CHECK(dim >= 0 && dim < x.dim() - 1, "sequence_parallel_linear: dim ", dim,
             " must be a leading dim of x ", x.describe());
  Tensor full = gathered(x, dim, comm);       // (B, T, in)
  Tensor y = kernels::linear(full, w, bias);  // (B, T, out)
  if (!any_requires_grad({x, w, bias})) return y;
  const int64_t n = w.size(0), k = w.size(1);
  const Shape full_shape = full.sizes();
  const int64_t rows = full.numel() / k;
  full = Tensor();         // not kept: the backward gathers it again
  Tensor xs = x.detach();  // this rank's slice only
  Tensor ws = x.requires_grad() ? w.detach() : Tensor();
  Communicator* c = &comm;
  record("sequence_parallel_linear", {x, w, bias}, {y},
         [xs, ws, full_shape, rows, n, k, dim, c](BackwardCtx& ctx) {
           Tensor g2 = ctx.grad().reshape({rows, n});  // (R, N)
           Tensor dx, dw, db;
           if (ctx.needs(1)) {
             Tensor x2 = gathered(xs, dim, *c).reshape({rows, k});  // (R, K)
             dw = empty({n, k}, g2.dtype(), g2.device());           // (N, K) = dY^T @ X
             kernels::gemm(g2, x2, dw, true, false);
           }
           if (ctx.needs(0)) {
             Tensor dfull = empty({rows, k}, g2.dtype(), g2.device());  // (R, K) = dY @ W
             kernels::gemm(g2, ws, dfull, false, false);
             dx = reduce_scatter_to_region(dfull.view(full_shape), dim, *c);  // x's shape
           }
           if (ctx.needs(2)) db = kernels::sum(g2, {0}, false);  // (N)
           return std::vector<Tensor>{dx, dw, db};
         });
  return y;
}

}  // namespace keel::parallel
