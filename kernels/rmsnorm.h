// Fused RMS normalisation over the last dim C:
//   y = x * rstd * weight,   rstd = 1 / sqrt(mean(x^2) + eps)
// The forward returns rstd (f32, one per row, shape = x's leading dims) for
// the backward, which makes one visit per row for dx and sums dweight over
// rows in blocks whose split depends only on the row count, so dweight is
// bitwise the same for any thread count. Math is in f32; bf16/f16 x and y
// are rounded once on store. weight may have any floating dtype; dweight
// comes back in f32 (the caller casts). A non-contiguous x or dy is copied
// to a contiguous one first.
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

struct RmsNormOut {
  Tensor y;     // x's shape and dtype
  Tensor rstd;  // x's leading dims, f32
};

// x (..., C), weight (C).
RmsNormOut rmsnorm(const Tensor& x, const Tensor& weight, double eps);

struct RmsNormGrads {
  Tensor dx;       // x's shape and dtype, or undefined when not asked for
  Tensor dweight;  // (C) f32, or undefined
};

// dy (..., C) in x's dtype; rstd as returned by rmsnorm().
RmsNormGrads rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                              const Tensor& rstd, bool need_dx, bool need_dweight);

}  // namespace keel::kernels
