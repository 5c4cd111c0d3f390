// Dropout launchers: validate, allocate, dispatch by device.
#include "kernels/dropout.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, uint64_t base, Tensor& y);
}  // namespace cpu

namespace cuda {
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, uint64_t base, Tensor& y);
}  // namespace cuda

namespace {

Tensor masked_scale(const char* op, const Tensor& x, double p, uint64_t seed, uint64_t offset,
                    uint64_t base) {
  KEEL_CHECK(p >= 0.0 && p < 1.0, op, ": p must be in [0, 1), got ", p, " for ", x.describe());
  check_floating(op, x, "input");
  Tensor y = empty(x.sizes(), x.dtype(), x.device());  // x's shape, contiguous
  on_device(
      op, x.device(), [&] { cpu::dropout(x, p, seed, offset, base, y); },
      [&] { cuda::dropout(x, p, seed, offset, base, y); });
  return y;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, uint64_t base) {
  return masked_scale("dropout", x, p, seed, offset, base);
}

Tensor dropout_backward(const Tensor& dy, double p, uint64_t seed, uint64_t offset,
                        uint64_t base) {
  return masked_scale("dropout backward", dy, p, seed, offset, base);
}

}  // namespace keel::kernels
