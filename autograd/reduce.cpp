// Differentiable reductions.
#include "autograd/ops.h"
#include "kernels/elementwise.h"
#include "kernels/index.h"
#include "kernels/reduce.h"

namespace keel {

using kernels::BinaryOp;

namespace {
// The gradient of a reduced tensor, reshaped so it broadcasts over x's shape.
Tensor unreduce(const Tensor& g, const Shape& in, const std::vector<int64_t>& rd) {
  return g.reshape(kernels::reduced_shape(in, rd, true));
}
}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Tensor y = kernels::sum(x, dims, keepdim);
  auto rd = kernels::reduce_dims(x, dims, "sum");
  Shape in = x.sizes();
  record("sum", {x}, {y}, [in, rd](BackwardCtx& c) {
    return std::vector<Tensor>{unreduce(c.grad(), in, rd).expand(in).contiguous()};
  });
  return y;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Tensor y = kernels::mean(x, dims, keepdim);
  auto rd = kernels::reduce_dims(x, dims, "mean");
  Shape in = x.sizes();
  int64_t count = 1;
  for (int64_t d : rd) count *= in[size_t(d)];
  record("mean", {x}, {y}, [in, rd, count](BackwardCtx& c) {
    Tensor g = kernels::binary_scalar(BinaryOp::Mul, unreduce(c.grad(), in, rd),
                                      1.0 / double(count));
    return std::vector<Tensor>{g.expand(in).contiguous()};
  });
  return y;
}

Tensor var(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction, bool keepdim) {
  Tensor y = kernels::var(x, dims, correction, keepdim);
  if (!any_requires_grad({x})) return y;
  auto rd = kernels::reduce_dims(x, dims, "var");
  int64_t count = 1;
  for (int64_t d : rd) count *= x.size(d);
  Tensor xs = x.detach();
  // d var / dx = 2 (x - mean) / (n - correction)
  record("var", {x}, {y}, [xs, rd, count, correction](BackwardCtx& c) {
    Tensor centered = kernels::binary(BinaryOp::Sub, xs, kernels::mean(xs, rd, true));
    Tensor g = kernels::binary_scalar(BinaryOp::Mul, unreduce(c.grad(), xs.sizes(), rd),
                                      2.0 / double(count - correction));
    return std::vector<Tensor>{kernels::binary(BinaryOp::Mul, centered, g)};
  });
  return y;
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  auto [values, indices] = kernels::max(x, dim, keepdim);
  if (!any_requires_grad({x})) return {values, indices};
  int64_t d = normalize_dim(dim, x.dim());
  Tensor idx = indices.detach();
  TensorMeta in = TensorMeta::of(x);
  record("max", {x}, {values}, [in, idx, d, keepdim](BackwardCtx& c) {
    // Scatter the gradient to the selected positions.
    Tensor g = c.grad().dtype() == in.dtype ? c.grad() : c.grad().to(in.dtype);
    Tensor ix = idx;
    if (!keepdim) {
      g = g.unsqueeze(d);
      ix = ix.unsqueeze(d);
    }
    Tensor gx = zeros(in.sizes, in.dtype, in.device);  // x's shape
    kernels::scatter_add_(gx, d, ix, g);
    return std::vector<Tensor>{gx};
  });
  return {values, indices};
}

}  // namespace keel
