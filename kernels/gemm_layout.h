// How GEMM operands reach a row-major BLAS (OpenBLAS on the CPU, cuBLAS in
// row-major terms on CUDA): each operand's last two dims as stored
// (row-major) or transposed (column-major), so strided and transposed views
// go to BLAS without a copy; only a matrix that is neither is copied. Shared
// by kernels/cpu/matmul.cpp and kernels/cuda/matmul.cu.
#pragma once

#include <algorithm>
#include <climits>

#include "core/tensor.h"

namespace keel::kernels {

// A (rows, cols) matrix for BLAS: element (i, j) at i * ld + j (trans false),
// or at j * ld + i (trans true: the data is op^T, row-major). ok is false
// when it is neither, or ld does not fit BLAS's int.
struct GemmMat {
  bool trans = false;
  int64_t ld = 0;
  bool ok = false;
};

// A size-1 dim's stride is never used to address memory, so it constrains
// nothing; a stride-0 (broadcast) dim of size > 1 makes rows overlap, which
// BLAS cannot express (ld must be >= the row length).
inline GemmMat gemm_mat(int64_t rows, int64_t cols, int64_t sr, int64_t sc) {
  GemmMat m;
  const int64_t r1 = std::max<int64_t>(rows, 1), c1 = std::max<int64_t>(cols, 1);
  if ((cols <= 1 || sc == 1) && (rows <= 1 || sr >= c1)) {
    m.trans = false;
    m.ld = rows <= 1 ? c1 : sr;
    m.ok = m.ld <= INT_MAX;
    if (m.ok) return m;
  }
  if ((rows <= 1 || sr == 1) && (cols <= 1 || sc >= r1)) {
    m.trans = true;
    m.ld = cols <= 1 ? r1 : sc;
    m.ok = m.ld <= INT_MAX;
  }
  return m;
}

// The layout of t's last two dims.
inline GemmMat gemm_mat(const Tensor& t) {
  return gemm_mat(t.size(-2), t.size(-1), t.stride(-2), t.stride(-1));
}

// t with its broadcast (stride-0) batch dims cut to size 1, so a copy or a
// conversion touches only t's own elements; expand() restores the shape.
inline Tensor compact_batch(const Tensor& t) {
  Tensor c = t;
  for (int64_t d = 0; d + 2 < t.dim(); ++d)
    if (t.stride(d) == 0 && t.size(d) > 1) c = c.narrow(d, 0, 1);
  return c;
}

struct GemmOperand {
  Tensor t;  // what BLAS reads: the view itself, or a contiguous copy of it
  GemmMat mat;
};

inline GemmOperand gemm_operand(const Tensor& x) {
  GemmMat m = gemm_mat(x);
  if (m.ok) return {x, m};
  // Neither row- nor column-major (e.g. both matrix strides > 1): the one
  // case that copies, and only x's own elements.
  Tensor copy = compact_batch(x).contiguous().expand(x.sizes());  // x's shape, row-major
  return {copy, gemm_mat(copy)};
}

// Strides of t's batch dims broadcast (right-aligned) to `batch`.
inline Shape batch_strides(const Tensor& t, const Shape& batch) {
  const size_t own = size_t(t.dim() - 2), lead = batch.size() - own;
  Shape s(batch.size(), 0);
  for (size_t i = 0; i < own; ++i) s[lead + i] = t.sizes()[i] == 1 ? 0 : t.strides()[i];
  return s;
}

}  // namespace keel::kernels
