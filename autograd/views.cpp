// Differentiable views: the forward is the raw view, the backward maps the
// gradient back through the inverse view (or a scatter into zeros).
#include "autograd/ops.h"
#include "kernels/reduce.h"

namespace keel {

Tensor reshape(const Tensor& x, const Shape& shape) {
  Tensor y = x.reshape(shape);
  if (y.same(x)) y = x.detach();
  Shape in = x.sizes();
  record("reshape", {x}, {y}, [in](BackwardCtx& c) {
    return std::vector<Tensor>{c.grad().reshape(in)};
  });
  return y;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  Tensor y = x.transpose(d0, d1);
  record("transpose", {x}, {y}, [d0, d1](BackwardCtx& c) {
    return std::vector<Tensor>{c.grad().transpose(d0, d1)};
  });
  return y;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  Tensor y = x.permute(dims);
  std::vector<int64_t> inv(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) inv[size_t(normalize_dim(dims[i], x.dim()))] = int64_t(i);
  record("permute", {x}, {y}, [inv](BackwardCtx& c) {
    return std::vector<Tensor>{c.grad().permute(inv)};
  });
  return y;
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  Tensor y = x.narrow(dim, start, length);
  TensorMeta in = TensorMeta::of(x);
  record("narrow", {x}, {y}, [in, dim, start, length](BackwardCtx& c) {
    Tensor g = zeros(in.sizes, c.grad().dtype(), in.device);
    g.narrow(dim, start, length).copy_(c.grad());
    return std::vector<Tensor>{g};
  });
  return y;
}

Tensor expand(const Tensor& x, const Shape& shape) {
  Tensor y = x.expand(shape);
  Shape in = x.sizes();
  record("expand", {x}, {y}, [in](BackwardCtx& c) {
    return std::vector<Tensor>{kernels::sum_to(c.grad(), in)};
  });
  return y;
}

Tensor unsqueeze(const Tensor& x, int64_t dim) { return reshape(x, x.unsqueeze(dim).sizes()); }
Tensor squeeze(const Tensor& x, int64_t dim) { return reshape(x, x.squeeze(dim).sizes()); }

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor y = x.contiguous();
  record("contiguous", {x}, {y}, [](BackwardCtx& c) { return std::vector<Tensor>{c.grad()}; });
  return y;
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor y = x.to(dtype);
  DType in = x.dtype();
  record("to_dtype", {x}, {y}, [in](BackwardCtx& c) {
    return std::vector<Tensor>{c.grad().to(in)};
  });
  return y;
}

}  // namespace keel
