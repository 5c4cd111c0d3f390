// Dropout launchers: validate (p, dtype, box), describe x's place in the
// logical tensor as runs of consecutive logical indices, dispatch by device.
#include "kernels/dropout.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const DropoutRuns& runs,
             Tensor& y);
}  // namespace cpu

namespace cuda {
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const DropoutRuns& runs,
             Tensor& y);
}  // namespace cuda

namespace {

DropoutRuns dropout_runs(const char* op, const Tensor& x, const DropoutBox& box) {
  DropoutRuns r;
  r.run = x.numel();
  r.rows = 1;
  if (box.logical.empty() && box.start.empty()) return r;  // x is the whole tensor
  const Shape& s = x.sizes();
  const int64_t R = x.dim();
  KEEL_CHECK(int64_t(box.logical.size()) == R && int64_t(box.start.size()) == R, op,
             ": the box (logical ", shape_str(box.logical), ", start ", shape_str(box.start),
             ") must have the input's rank ", R, "; input ", x.describe());
  KEEL_CHECK(R <= kDropoutMaxDims, op, ": a box takes at most ", kDropoutMaxDims, " dims; input ",
             x.describe());
  for (int64_t d = 0; d < R; ++d)
    KEEL_CHECK(box.start[d] >= 0 && box.start[d] + s[d] <= box.logical[d], op, ": dim ", d,
               ": start ", box.start[d], " + size ", s[d], " does not fit in the logical size ",
               box.logical[d], " (logical ", shape_str(box.logical), ", start ",
               shape_str(box.start), ", input ", x.describe(), ")");
  if (R == 0) return r;
  const Shape ls = contiguous_strides(box.logical);
  for (int64_t d = 0; d < R; ++d) r.base += uint64_t(box.start[d]) * uint64_t(ls[d]);
  // Dims after k are whole in x, so dims k.. are one run of logical indices.
  int64_t k = R - 1;
  r.run = s[R - 1];
  while (k > 0 && s[k] == box.logical[k]) r.run *= s[--k];
  r.rows = 1;
  for (int64_t d = 0; d < k; ++d) {
    r.rows *= s[d];
    if (s[d] == 1) continue;  // contributes only its start, already in base
    r.sizes[r.outer] = s[d];
    r.strides[r.outer] = uint64_t(ls[d]);
    ++r.outer;
  }
  return r;
}

Tensor masked_scale(const char* op, const Tensor& x, double p, uint64_t seed, uint64_t offset,
                    const DropoutBox& box) {
  KEEL_CHECK(p >= 0.0 && p < 1.0, op, ": p must be in [0, 1), got ", p, " for ", x.describe());
  check_floating(op, x, "input");
  const DropoutRuns runs = dropout_runs(op, x, box);
  Tensor y = empty(x.sizes(), x.dtype(), x.device());  // x's shape, contiguous
  on_device(
      op, x.device(), [&] { cpu::dropout(x, p, seed, offset, runs, y); },
      [&] { cuda::dropout(x, p, seed, offset, runs, y); });
  return y;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const DropoutBox& box) {
  return masked_scale("dropout", x, p, seed, offset, box);
}

Tensor dropout_backward(const Tensor& dy, double p, uint64_t seed, uint64_t offset,
                        const DropoutBox& box) {
  return masked_scale("dropout backward", dy, p, seed, offset, box);
}

}  // namespace keel::kernels
