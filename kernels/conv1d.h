// Depthwise causal 1-D convolution, the short convolution in Hyena and
// Mamba: every channel has its own K-tap filter, and output t sees inputs
// t-K+1 .. t only (zero padding on the left), so no future token leaks in.
// x may be a strided view and f32, bf16 or f16; the arithmetic is f32 and
// the parameter-gradient sums over (B, T) accumulate in f64.
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

// x (B, C, T), weight (C, K), bias (C) or undefined -> y (B, C, T):
//   y[b,c,t] = bias[c] + sum_k weight[c,k] * x[b,c,t-(K-1)+k]
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

struct CausalConv1dGrads {
  Tensor dx;       // (B, C, T), x's dtype
  Tensor dweight;  // (C, K), weight's dtype
  Tensor dbias;    // (C), undefined unless asked for
};

// Gradients of causal_conv1d given dy (B, C, T). Only the requested ones are
// computed; the others come back undefined.
CausalConv1dGrads causal_conv1d_backward(const Tensor& x, const Tensor& weight, const Tensor& dy,
                                         bool need_dx, bool need_dweight, bool need_dbias);

}  // namespace keel::kernels
