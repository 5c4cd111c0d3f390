// Softmax launchers: validate, view the input as (outer, n, inner) around
// the softmax dim, allocate, dispatch by device.
#include "kernels/softmax.h"

#include <algorithm>

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
// x, y contiguous (outer, n, inner); the softmax runs over n.
void softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, Tensor& y);
// y, dy, dx contiguous (outer, n, inner).
void softmax_backward(const Tensor& y, const Tensor& dy, int64_t outer, int64_t n, int64_t inner,
                      bool log, Tensor& dx);
}  // namespace cpu

namespace cuda {
void softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, Tensor& y);
void softmax_backward(const Tensor& y, const Tensor& dy, int64_t outer, int64_t n, int64_t inner,
                      bool log, Tensor& dx);
}  // namespace cuda

namespace {

struct RowLayout {
  int64_t outer = 1, n = 1, inner = 1;
};

// A 0-dim tensor is treated as one element along dim 0 (or -1), as in PyTorch.
RowLayout row_layout(const char* op, const Tensor& x, int64_t dim) {
  const int64_t nd = std::max<int64_t>(x.dim(), 1);
  KEEL_CHECK(dim >= -nd && dim < nd, op, ": dim ", dim, " is out of range for ", x.describe());
  RowLayout L;
  if (x.dim() == 0) return L;
  const int64_t d = dim < 0 ? dim + nd : dim;
  for (int64_t k = 0; k < d; ++k) L.outer *= x.size(k);
  L.n = x.size(d);
  for (int64_t k = d + 1; k < x.dim(); ++k) L.inner *= x.size(k);
  return L;
}

Tensor forward(const char* op, const Tensor& x, int64_t dim, bool log) {
  check_floating(op, x, "input");
  RowLayout L = row_layout(op, x, dim);
  // The kernel reads rows as (outer, n, inner) blocks, so a strided view is
  // copied once; a contiguous input is used in place for any dim.
  Tensor xc = x.contiguous();
  Tensor y = empty(x.sizes(), x.dtype(), x.device());  // same shape as x
  if (x.numel() == 0) return y;
  on_device(
      op, x.device(), [&] { cpu::softmax(xc, L.outer, L.n, L.inner, log, y); },
      [&] { cuda::softmax(xc, L.outer, L.n, L.inner, log, y); });
  return y;
}

Tensor backward(const char* op, const Tensor& y, const Tensor& dy, int64_t dim, bool log) {
  check_floating(op, y, "output");
  check_devices(op, y.device(), {&dy});
  KEEL_CHECK(y.sizes() == dy.sizes() && y.dtype() == dy.dtype(), op,
             ": output and its gradient differ: y ", y.describe(), ", dy ", dy.describe());
  RowLayout L = row_layout(op, y, dim);
  Tensor yc = y.contiguous(), dyc = dy.contiguous();
  Tensor dx = empty(y.sizes(), y.dtype(), y.device());  // same shape as y
  if (y.numel() == 0) return dx;
  on_device(
      op, y.device(), [&] { cpu::softmax_backward(yc, dyc, L.outer, L.n, L.inner, log, dx); },
      [&] { cuda::softmax_backward(yc, dyc, L.outer, L.n, L.inner, log, dx); });
  return dx;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return forward("softmax", x, dim, false); }

Tensor log_softmax(const Tensor& x, int64_t dim) { return forward("log_softmax", x, dim, true); }

Tensor softmax_backward(const Tensor& y, const Tensor& dy, int64_t dim) {
  return backward("softmax backward", y, dy, dim, false);
}

Tensor log_softmax_backward(const Tensor& y, const Tensor& dy, int64_t dim) {
  return backward("log_softmax backward", y, dy, dim, true);
}

}  // namespace keel::kernels
