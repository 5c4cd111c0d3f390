// CPU GEMM on OpenBLAS. Each operand's last two dims are matched to a BLAS
// layout (row-major -> NoTrans, column-major -> Trans), so strided and
// transposed views reach cblas_sgemm as they are. A batch is one sgemm when a
// shared rhs lets the batch fold into M, else a loop of sgemm calls, run in
// parallel over the batch when the matrices are small.
//
// Threads: keel links OpenBLAS's OpenMP build (CMakeLists.txt). There an
// sgemm called inside an active OpenMP parallel region runs on one thread
// (OpenBLAS common_thread.h: num_cpu_avail() returns 1 when
// omp_in_parallel()), so the batch loop and BLAS never oversubscribe. With
// any other build (openblas_get_parallel() != 2) the batch loop stays serial
// and BLAS threads each call itself.
#include "kernels/matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <climits>
#include <vector>

#include "core/strided.h"
#include "kernels/dispatch.h"
#include "kernels/elementwise.h"
#include "kernels/gemm_layout.h"

namespace keel::kernels::cpu {

namespace {

// Below this many multiply-adds per matrix a threaded sgemm spends more on
// its fork/join than on the product; such batches go one matrix per thread.
constexpr double kSmallGemm = double(1 << 21);  // e.g. 128 x 128 x 128

using Operand = GemmOperand;

CBLAS_TRANSPOSE blas_trans(const GemmMat& m) { return m.trans ? CblasTrans : CblasNoTrans; }

inline void sgemm(const Operand& a, const Operand& b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* pa, int64_t lda, const float* pb, float beta, float* pc,
                  int64_t ldc) {
  cblas_sgemm(CblasRowMajor, blas_trans(a.mat), blas_trans(b.mat), int(m), int(n), int(k), alpha,
              pa, int(lda), pb, int(b.mat.ld), beta, pc, int(ldc));
}

void gemm_f32(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) {
  const int64_t m = out.size(-2), n = out.size(-1), k = a.size(-1);
  if (out.numel() == 0) return;
  if (k == 0) {  // an empty sum: out = beta * out (BLAS wants ld >= 1 even then)
    if (beta == 0.0f)
      out.zero_();
    else if (beta != 1.0f)
      mul_scalar_(out, beta);
    return;
  }
  GemmMat cm = gemm_mat(out);
  if (cm.ok && cm.trans) {
    // A column-major out is a row-major out^T = op(b)^T @ op(a)^T: swap the
    // operands instead of copying.
    Tensor ot = out.transpose(-2, -1);
    gemm_f32(b.transpose(-2, -1), a.transpose(-2, -1), ot, alpha, beta);
    return;
  }
  if (!cm.ok) {
    Tensor tmp = beta == 0.0f ? empty(out.sizes()) : out.clone();  // (..., M, N)
    gemm_f32(a, b, tmp, alpha, beta);
    out.copy_(tmp);
    return;
  }
  Operand A = gemm_operand(a), B = gemm_operand(b);
  const Shape batch(out.sizes().begin(), out.sizes().end() - 2);
  const std::array<Shape, 3> st{batch_strides(A.t, batch), batch_strides(B.t, batch),
                                batch_strides(out, batch)};
  StridedLayout<3> L = collapse_dims<3>(batch, st);
  const int64_t nb = shape_numel(batch);
  const float* pa = A.t.data<float>();
  const float* pb = B.t.data<float>();
  float* pc = out.data<float>();

  // A shared rhs (stride 0 over the whole batch) with lhs and out rows evenly
  // spaced across the batch: the batch is extra rows of one big GEMM, e.g.
  // (B, T, C) @ (C, N) as (B*T, C) @ (C, N).
  if (nb > 1 && L.sizes.size() == 1 && L.strides[1][0] == 0 && !A.mat.trans) {
    const int64_t sa = L.strides[0][0], sc = L.strides[2][0];
    const bool a_even = m == 1 ? sa >= k : sa == m * A.mat.ld;
    const bool c_even = m == 1 ? sc >= n : sc == m * cm.ld;
    if (a_even && c_even && nb * m <= INT_MAX && sa <= INT_MAX && sc <= INT_MAX) {
      sgemm(A, B, nb * m, n, k, alpha, pa, m == 1 ? sa : A.mat.ld, pb, beta, pc,
            m == 1 ? sc : cm.ld);
      return;
    }
  }

  // Per-matrix offsets from the collapsed batch layout.
  std::vector<std::array<int64_t, 3>> off(static_cast<size_t>(nb));
  {
    const int nd = int(L.sizes.size());
    std::vector<int64_t> idx(size_t(nd), 0);
    std::array<int64_t, 3> cur{0, 0, 0};
    for (int64_t i = 0; i < nb; ++i) {
      off[size_t(i)] = cur;
      for (int d = nd - 1; d >= 0; --d) {
        for (int q = 0; q < 3; ++q) cur[q] += L.strides[q][d];
        if (++idx[size_t(d)] < L.sizes[d]) break;
        for (int q = 0; q < 3; ++q) cur[q] -= L.strides[q][d] * L.sizes[d];
        idx[size_t(d)] = 0;
      }
    }
  }
  auto one = [&](int64_t i) {
    const auto& o = off[size_t(i)];
    sgemm(A, B, m, n, k, alpha, pa + o[0], A.mat.ld, pb + o[1], beta, pc + o[2], cm.ld);
  };
  static const bool blas_is_openmp = openblas_get_parallel() == 2;
  const int threads = omp_get_max_threads();
  const bool small = double(m) * double(n) * double(k) <= kSmallGemm;
  if (blas_is_openmp && threads > 1 && nb > 1 && (small || nb >= 4 * int64_t(threads))) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < nb; ++i) one(i);
  } else {
    for (int64_t i = 0; i < nb; ++i) one(i);
  }
}

}  // namespace

void gemm(const Tensor& a, const Tensor& b, Tensor& out, double alpha, double beta) {
  if (out.dtype() == DType::F32) {
    gemm_f32(a, b, out, float(alpha), float(beta));
    return;
  }
  // bf16/f16: widen to f32 (own elements only), multiply, round once on store.
  Tensor a32 = compact_batch(a).to(DType::F32).expand(a.sizes());      // (..., M, K)
  Tensor b32 = compact_batch(b).to(DType::F32).expand(b.sizes());      // (..., K, N)
  Tensor o32 = beta == 0.0 ? empty(out.sizes()) : out.to(DType::F32);  // (..., M, N)
  gemm_f32(a32, b32, o32, float(alpha), float(beta));
  out.copy_(o32);
}

}  // namespace keel::kernels::cpu
