// Fused layer normalisation over the last dim C:
//   y = (x - mean) * rstd * weight + bias,   rstd = 1 / sqrt(var + eps)
// with the population variance. The forward returns mean and rstd (f32, one
// per row, shape = x's leading dims) so the backward never recomputes them.
// The backward makes one visit per row for dx and sums dweight/dbias over
// rows in blocks whose split depends only on the row count, so parameter
// gradients are bitwise the same for any thread count. Math is in f32;
// bf16/f16 x and y are rounded once on store. weight/bias may have any
// floating dtype; their gradients come back in f32 (the caller casts).
// A non-contiguous x or dy is copied to a contiguous one first.
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

struct LayerNormOut {
  Tensor y;     // x's shape and dtype
  Tensor mean;  // x's leading dims, f32
  Tensor rstd;  // x's leading dims, f32
};

// x (..., C), weight (C), bias (C) or undefined.
LayerNormOut layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

struct LayerNormGrads {
  Tensor dx;       // x's shape and dtype, or undefined when not asked for
  Tensor dweight;  // (C) f32, or undefined
  Tensor dbias;    // (C) f32, or undefined (also when there is no bias)
};

// dy (..., C) in x's dtype; mean and rstd as returned by layernorm().
// `need_dx` / `need_dparams` skip work the caller does not want.
LayerNormGrads layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                  const Tensor& mean, const Tensor& rstd, bool has_bias,
                                  bool need_dx, bool need_dparams);

}  // namespace keel::kernels
