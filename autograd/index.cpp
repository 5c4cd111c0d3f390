// Differentiable indexing and joining. gather and index_select send their
// gradient back with kernels::scatter_add_ / index_add_ (repeated indices
// sum); concat hands each input a narrow view of the gradient and stack a
// select; split and chunk return views of x under one node whose backward
// writes each chunk's gradient into its slice of x's gradient (the engine
// passes zeros for chunks that got none).
#include "autograd/ops.h"
#include "kernels/index.h"

namespace keel {

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  Tensor y = kernels::index_select(x, dim, index);
  if (!any_requires_grad({x})) return y;
  const int64_t d = normalize_dim(dim, x.dim());
  Tensor idx = index.detach();
  TensorMeta in = TensorMeta::of(x);
  record("index_select", {x}, {y}, [idx, d, in](BackwardCtx& c) {
    Tensor gx = zeros(in.sizes, in.dtype, in.device);  // x's shape
    kernels::index_add_(gx, d, idx, c.grad());
    return std::vector<Tensor>{gx};
  });
  return y;
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  Tensor y = kernels::gather(x, dim, index);
  if (!any_requires_grad({x})) return y;
  const int64_t d = normalize_dim(dim, x.dim());
  Tensor idx = index.detach();
  TensorMeta in = TensorMeta::of(x);
  record("gather", {x}, {y}, [idx, d, in](BackwardCtx& c) {
    Tensor gx = zeros(in.sizes, in.dtype, in.device);  // x's shape
    kernels::scatter_add_(gx, d, idx, c.grad());
    return std::vector<Tensor>{gx};
  });
  return y;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  Tensor y = kernels::concat(xs, dim);
  if (!any_requires_grad(xs)) return y;
  const int64_t d = normalize_dim(dim, y.dim());
  std::vector<int64_t> lens;
  for (const Tensor& x : xs) lens.push_back(x.size(d));
  record("concat", xs, {y}, [d, lens](BackwardCtx& c) {
    std::vector<Tensor> gs(lens.size());
    int64_t start = 0;
    for (size_t i = 0; i < lens.size(); ++i) {
      if (c.needs(i)) gs[i] = c.grad().narrow(d, start, lens[i]);
      start += lens[i];
    }
    return gs;
  });
  return y;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  std::vector<Tensor> ys = kernels::split(x, sizes, dim);
  if (ys.empty() || !any_requires_grad({x})) return ys;
  const int64_t d = normalize_dim(dim, x.dim());
  const size_t n = ys.size();
  record("split", {x}, ys, [d, n](BackwardCtx& c) {
    std::vector<Tensor> gs;
    for (size_t i = 0; i < n; ++i) gs.push_back(c.grad(i));
    return std::vector<Tensor>{kernels::concat(gs, d)};  // x's shape
  });
  return ys;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  const int64_t d = normalize_dim(dim, x.dim(), "chunk dim");
  return split(x, kernels::chunk_sizes(x.size(d), chunks), d);
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  Tensor y = kernels::stack(xs, dim);
  if (!any_requires_grad(xs)) return y;
  const int64_t d = normalize_dim(dim, y.dim());
  const size_t n = xs.size();
  record("stack", xs, {y}, [d, n](BackwardCtx& c) {
    std::vector<Tensor> gs(n);
    for (size_t i = 0; i < n; ++i)
      if (c.needs(i)) gs[i] = c.grad().select(d, int64_t(i));
    return gs;
  });
  return y;
}

}  // namespace keel
