// Matrix products through BLAS (OpenBLAS cblas_sgemm on the CPU, cuBLAS and
// cuBLASLt on CUDA: kernels/cuda/matmul.cu): a batched, broadcasting GEMM
// that writes into a given output (so beta = 1 accumulates in place),
// NumPy-style matmul, and nn.Linear's y = x @ w^T + b (on CUDA the bias is
// added in cuBLASLt's epilogue).
//
// Transposes are folded into the BLAS call: an operand whose last two dims
// are row-major (strides (ld, 1)) goes as NoTrans, one that is column-major
// (strides (1, ld), e.g. a transposed view) goes as Trans; neither is
// copied. An operand is copied only when its last two dims are neither
// (both strides > 1, overlapping rows such as a stride-0 expand inside the
// matrix, or a leading dimension past BLAS's 32-bit int), and then only its
// own elements, never its broadcast batch. bf16/f16 are converted to f32,
// multiplied in f32 and rounded once on store (CPU only).
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

// out = alpha * op(a) @ op(b) + beta * out, batched over leading dims.
// op(a) = a^T (last two dims) when trans_a, else a; likewise b.
// op(a) (..., M, K), op(b) (..., K, N), out (..., M, N): the batch dims of a
// and b broadcast to exactly out's batch dims. a, b, out share one floating
// dtype and device; out must not be a broadcast view nor share storage with
// a or b. With beta == 0, out's previous contents are ignored (NaN included).
void gemm(const Tensor& a, const Tensor& b, Tensor& out, bool trans_a = false, bool trans_b = false,
          double alpha = 1.0, double beta = 0.0);

// (..., M, K) @ (..., K, N) -> (..., M, N) with broadcast batch dims. A 1-D
// a (K) is treated as (1, K) and a 1-D b (K) as (K, 1); the added dim is
// dropped from the result, as in NumPy (1-D @ 1-D is a 0-d dot product).
Tensor matmul(const Tensor& a, const Tensor& b);
// The result shape of matmul(a, b), or a keel::Error naming both shapes.
Shape matmul_shape(const Tensor& a, const Tensor& b);

// x (..., K), w (N, K), bias (N) or undefined -> (..., N) = x @ w^T + bias,
// one GEMM over all leading dims of x flattened.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

// gelu_tanh(x @ w^T + bias), bias required: the first half of a GPT MLP. On
// CUDA one cuBLASLt call with the bias+GELU epilogue (falling back to a GEMM
// and a GELU kernel where cuBLASLt has no algorithm); on the CPU linear()
// then unary(GeluTanh). When `pre_activation` is given it receives
// x @ w^T + bias (..., N), which GELU's backward needs.
Tensor linear_bias_gelu(const Tensor& x, const Tensor& w, const Tensor& bias,
                        Tensor* pre_activation = nullptr);

// TF32 tensor cores for f32 GEMMs on CUDA (inputs rounded to 10-bit
// mantissas, f32 accumulation): off by default, so f32 products match the
// CPU to f32 rounding. Process-wide; the CPU path ignores it.
void set_allow_tf32(bool allow);
bool allow_tf32();

}  // namespace keel::kernels
