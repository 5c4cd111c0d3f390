// Differentiable matmul and linear. Backward calls kernels::gemm with trans
// flags, so dA = dC @ B^T and dB = A^T @ dC never materialise a transpose.
// When an operand was broadcast over the batch its gradient is summed back to
// its shape: a shared 2-D rhs (x @ W) as one GEMM over the flattened batch, a
// shared operand with big matrices as GEMMs accumulating in place (beta = 1),
// anything else as per-batch products reduced with sum_to.
#include <array>

#include "autograd/ops.h"
#include "core/strided.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"

namespace keel {

namespace {

// Per-matrix work (multiply-adds) from which a shared operand's gradient is
// accumulated GEMM by GEMM; below it, one batched GEMM into a temporary and a
// parallel sum are faster than a serial chain of tiny GEMMs.
constexpr double kAccumulateGemm = 32768.0;

Shape batch_of(const Shape& s) { return Shape(s.begin(), s.end() - 2); }

Shape with_matrix(Shape batch, int64_t rows, int64_t cols) {
  batch.push_back(rows);
  batch.push_back(cols);
  return batch;
}

// The (rows, cols) matrix number `i` (row-major over `batch`) of t, whose
// batch dims broadcast to `batch`: a view, no copy.
Tensor batch_matrix(const Tensor& t, const Shape& batch, int64_t i) {
  const int64_t lead = int64_t(batch.size()) - (t.dim() - 2);
  int64_t off = t.offset();
  for (int64_t d = int64_t(batch.size()) - 1; d >= 0; --d) {
    const int64_t idx = i % batch[size_t(d)];
    i /= batch[size_t(d)];
    if (d >= lead && t.size(d - lead) != 1) off += idx * t.stride(d - lead);
  }
  return t.as_strided({t.size(-2), t.size(-1)}, {t.stride(-2), t.stride(-1)}, off);
}

// t (..., R, C) as (prod(...) * R, C) without a copy, when its batch and row
// dims step evenly through memory; undefined otherwise.
Tensor flatten_rows(const Tensor& t) {
  Shape sizes(t.sizes().begin(), t.sizes().end() - 1);
  std::array<Shape, 1> strides{Shape(t.strides().begin(), t.strides().end() - 1)};
  StridedLayout<1> L = collapse_dims<1>(sizes, strides);
  if (L.sizes.size() != 1) return Tensor();
  return t.as_strided({shape_numel(sizes), t.size(-1)}, {L.strides[0][0], t.stride(-1)},
                      t.offset());
}

// d = sum over `batch` of op(x_i) @ op(y_i), each GEMM adding into d in place.
void gemm_batch_sum(const Tensor& x, const Tensor& y, Tensor& d, bool tx, bool ty,
                    const Shape& batch) {
  const int64_t nb = shape_numel(batch);
  if (nb == 0) {
    d.zero_();
    return;
  }
  for (int64_t i = 0; i < nb; ++i)
    kernels::gemm(batch_matrix(x, batch, i), batch_matrix(y, batch, i), d, tx, ty, 1.0,
                  i == 0 ? 0.0 : 1.0);
}

// Gradient of the lhs a (..., M, K) of c = a @ b, from g = dc (..., M, N):
// g @ b^T, summed down to a_shape.
Tensor grad_lhs(const Tensor& g, const Tensor& b, const Shape& a_shape) {
  const Shape ob = batch_of(g.sizes()), ab = batch_of(a_shape);
  const int64_t m = g.size(-2), n = g.size(-1), k = b.size(-2);
  Tensor da = empty(a_shape, g.dtype(), g.device());  // (..., M, K)
  if (shape_numel(ab) == shape_numel(ob)) {
    Tensor d = da.view(with_matrix(ob, m, k));
    kernels::gemm(g, b, d, false, true);
    return da;
  }
  if (shape_numel(ab) == 1 && double(m) * double(n) * double(k) >= kAccumulateGemm) {
    Tensor d = da.view({m, k});  // (M, K)
    gemm_batch_sum(g, b, d, false, true, ob);
    return da;
  }
  Tensor full = empty(with_matrix(ob, m, k), g.dtype(), g.device());  // (batch..., M, K)
  kernels::gemm(g, b, full, false, true);
  return kernels::sum_to(full, a_shape);
}

// Gradient of the rhs b (..., K, N) of c = a @ b, from g = dc (..., M, N):
// a^T @ g, summed down to b_shape.
Tensor grad_rhs(const Tensor& a, const Tensor& g, const Shape& b_shape) {
  const Shape ob = batch_of(g.sizes()), bb = batch_of(b_shape);
  const int64_t m = g.size(-2), n = g.size(-1), k = a.size(-1);
  Tensor db = empty(b_shape, g.dtype(), g.device());  // (..., K, N)
  if (shape_numel(bb) == shape_numel(ob)) {
    Tensor d = db.view(with_matrix(ob, k, n));
    kernels::gemm(a, g, d, true, false);
    return db;
  }
  if (shape_numel(bb) == 1) {
    // b shared by the batch (x @ W). a then has the full batch, so
    // dB = sum_i A_i^T dC_i = A^T dC with the batch flattened into rows.
    Tensor d = db.view({k, n});                         // (K, N)
    Tensor a2 = flatten_rows(a), g2 = flatten_rows(g);  // (B*M, K), (B*M, N)
    if (a2.defined() && g2.defined()) {
      kernels::gemm(a2, g2, d, true, false);
      return db;
    }
    if (double(m) * double(n) * double(k) >= kAccumulateGemm) {
      gemm_batch_sum(a, g, d, true, false, ob);
      return db;
    }
  }
  Tensor full = empty(with_matrix(ob, k, n), g.dtype(), g.device());  // (batch..., K, N)
  kernels::gemm(a, g, full, true, false);
  return kernels::sum_to(full, b_shape);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::matmul(a, b);
  if (!any_requires_grad({a, b})) return y;
  // Backward works on the promoted (>= 2-D) operands; the gradient is
  // reshaped to the promoted output and the results back to a's and b's shapes.
  Tensor a2 = a.dim() == 1 ? a.detach().unsqueeze(0) : a.detach();  // (..., M, K)
  Tensor b2 = b.dim() == 1 ? b.detach().unsqueeze(1) : b.detach();  // (..., K, N)
  const Shape full = kernels::matmul_shape(a2, b2);                 // (batch..., M, N)
  const Shape as = a.sizes(), bs = b.sizes(), a2s = a2.sizes(), b2s = b2.sizes();
  // Each gradient needs only the other operand.
  Tensor saved_a = b.requires_grad() ? a2 : Tensor();
  Tensor saved_b = a.requires_grad() ? b2 : Tensor();
  record("matmul", {a, b}, {y}, [saved_a, saved_b, full, as, bs, a2s, b2s](BackwardCtx& c) {
    Tensor g = c.grad().reshape(full);
    Tensor da, db;
    if (c.needs(0)) da = grad_lhs(g, saved_b, a2s).reshape(as);
    if (c.needs(1)) db = grad_rhs(saved_a, g, b2s).reshape(bs);
    return std::vector<Tensor>{da, db};
  });
  return y;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  Tensor y = kernels::linear(x, w, bias);
  if (!any_requires_grad({x, w, bias})) return y;
  const int64_t n = w.size(0), k = w.size(1);
  const Shape xs = x.sizes();
  const int64_t rows = shape_numel(Shape(xs.begin(), xs.end() - 1));
  // dW needs x as (R, K) rows and dX needs w; keep only what is asked for.
  Tensor x2 = w.requires_grad() ? x.detach().reshape({rows, k}) : Tensor();  // (R, K)
  Tensor ws = x.requires_grad() ? w.detach() : Tensor();
  record("linear", {x, w, bias}, {y}, [x2, ws, xs, rows, n, k](BackwardCtx& c) {
    Tensor g2 = c.grad().reshape({rows, n});  // (R, N)
    Tensor dx, dw, db;
    if (c.needs(0)) {
      dx = empty({rows, k}, g2.dtype(), g2.device());  // (R, K) = dY @ W
      kernels::gemm(g2, ws, dx, false, false);
      dx = dx.view(xs);
    }
    if (c.needs(1)) {
      dw = empty({n, k}, g2.dtype(), g2.device());  // (N, K) = dY^T @ X, all rows in one GEMM
      kernels::gemm(g2, x2, dw, true, false);
    }
    if (c.needs(2)) db = kernels::sum(g2, {0}, false);  // (N)
    return std::vector<Tensor>{dx, dw, db};
  });
  return y;
}

}  // namespace keel
