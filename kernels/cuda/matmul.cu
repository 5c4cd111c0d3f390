// CUDA GEMM on cuBLAS (cublasGemmStridedBatchedEx) and cuBLASLt (linear with
// a bias or bias + GELU-tanh epilogue). Operands are matched to a BLAS layout
// exactly as the CPU path does (kernels/cpu/matmul.cpp): row-major last two
// dims go as they are, column-major ones (transposed views) with the
// transpose flag, and only an operand that is neither is copied (its own
// elements, never its broadcast batch). cuBLAS is column-major, so row-major
// C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T: the operands swap
// places and nothing is transposed in memory.
//
// Precision: f32 in, f32 out, f32 accumulation (CUBLAS_COMPUTE_32F), or TF32
// tensor cores when set_allow_tf32(true); bf16 and f16 in and out with f32
// accumulation and f32 alpha/beta. Reduced-precision split-K reductions are
// disallowed so every dtype accumulates in f32 as the CPU does.
//
// Handles: one cuBLAS and one cuBLASLt handle per (device, stream), each
// with a 32 MiB workspace from keel's caching allocator, allocated on that
// stream (the size NVIDIA recommends for Hopper). They live for the process.
#include <cublasLt.h>
#include <cublas_v2.h>

#include <algorithm>
#include <array>
#include <climits>
#include <map>
#include <mutex>

#include "core/cuda/check.h"
#include "core/cuda/stream.h"
#include "core/layout.h"
#include "kernels/elementwise.h"
#include "kernels/gemm_layout.h"
#include "kernels/matmul.h"

namespace keel::kernels::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

struct Handles {
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  Tensor workspace;  // (32 MiB,) u8
};

Handles& handles_for(Device device) {
  static std::mutex mu;
  static auto* cache = new std::map<std::pair<int, cudaStream_t>, Handles*>;  // leaked
  const cudaStream_t stream = ::keel::cuda::current_stream(device.index);
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(device.index, stream);
  auto it = cache->find(key);
  if (it != cache->end()) return *it->second;
  ::keel::cuda::DeviceGuard guard(device.index);
  auto* h = new Handles;
  h->workspace = empty({int64_t(kWorkspaceBytes)}, DType::U8, device);  // on `stream`
  KEEL_CUBLAS_CHECK(cublasCreate(&h->blas));
  KEEL_CUBLAS_CHECK(cublasSetStream(h->blas, stream));
  KEEL_CUBLAS_CHECK(cublasSetWorkspace(h->blas, h->workspace.raw_data(), kWorkspaceBytes));
  KEEL_CUBLAS_CHECK(cublasSetMathMode(
      h->blas,
      cublasMath_t(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  KEEL_CUBLAS_CHECK(cublasLtCreate(&h->lt));
  cache->emplace(key, h);
  return *h;
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::BF16:
      return CUDA_R_16BF;
    case DType::F16:
      return CUDA_R_16F;
    default:
      KEEL_FAIL("CUDA gemm: expected f32, bf16 or f16, got ", dtype_name(t));
  }
}

cublasComputeType_t compute_type(DType t) {
  return t == DType::F32 && allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

using Operand = GemmOperand;

cublasOperation_t op_of(const GemmMat& m) { return m.trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// `count` products C_i = alpha op(A_i) op(B_i) + beta C_i, matrices i steps
// of (sa, sb, sc) elements apart, in row-major terms (see the file comment).
void strided_batched(Handles& h, DType dt, const Operand& A, const Operand& B, int64_t m, int64_t n,
                     int64_t k, float alpha, const char* pa, const char* pb, float beta, char* pc,
                     int64_t ldc, int64_t sa, int64_t sb, int64_t sc, int64_t count) {
  const cudaDataType_t t = cuda_type(dt);
  const int64_t esize = int64_t(dtype_size(dt));
  for (int64_t done = 0; done < count;) {
    const int64_t now = std::min<int64_t>(count - done, INT_MAX);
    KEEL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        h.blas, op_of(B.mat), op_of(A.mat), int(n), int(m), int(k), &alpha, pb + done * sb * esize,
        t, int(B.mat.ld), sb, pa + done * sa * esize, t, int(A.mat.ld), sa, &beta,
        pc + done * sc * esize, t, int(ldc), sc, int(now), compute_type(dt), CUBLAS_GEMM_DEFAULT));
    done += now;
  }
}

void gemm_impl(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) {
  const int64_t m = out.size(-2), n = out.size(-1), k = a.size(-1);
  if (out.numel() == 0) return;
  if (k == 0) {  // an empty sum: out = beta * out
    if (beta == 0.0f)
      out.zero_();
    else if (beta != 1.0f)
      mul_scalar_(out, beta);
    return;
  }
  GemmMat cm = gemm_mat(out);
  if (cm.ok && cm.trans) {
    // A column-major out is a row-major out^T = op(b)^T op(a)^T.
    Tensor ot = out.transpose(-2, -1);
    gemm_impl(b.transpose(-2, -1), a.transpose(-2, -1), ot, alpha, beta);
    return;
  }
  if (!cm.ok) {
    Tensor tmp = beta == 0.0f ? empty(out.sizes(), out.dtype(), out.device()) : out.clone();
    gemm_impl(a, b, tmp, alpha, beta);  // (..., M, N)
    out.copy_(tmp);
    return;
  }
  Handles& h = handles_for(out.device());
  Operand A = gemm_operand(a), B = gemm_operand(b);
  const Shape batch(out.sizes().begin(), out.sizes().end() - 2);
  const StridedLayout<3> L = collapse_dims<3>(
      batch, {batch_strides(A.t, batch), batch_strides(B.t, batch), batch_strides(out, batch)});
  const int64_t nb = shape_numel(batch);
  const char* pa = static_cast<const char*>(A.t.raw_data());
  const char* pb = static_cast<const char*>(B.t.raw_data());
  char* pc = static_cast<char*>(out.raw_data());
  const DType dt = out.dtype();

  // A shared rhs with lhs and out rows evenly spaced over the batch: the
  // batch is extra rows of one GEMM, e.g. (B, T, C) @ (C, N) as (B*T, C) @ (C, N).
  if (nb > 1 && L.sizes.size() == 1 && L.strides[1][0] == 0 && !A.mat.trans) {
    const int64_t sa = L.strides[0][0], sc = L.strides[2][0];
    const bool a_even = m == 1 ? sa >= k : sa == m * A.mat.ld;
    const bool c_even = m == 1 ? sc >= n : sc == m * cm.ld;
    if (a_even && c_even && nb * m <= INT_MAX && sa <= INT_MAX && sc <= INT_MAX) {
      Operand A2 = A;
      if (m == 1) A2.mat.ld = sa;
      strided_batched(h, dt, A2, B, nb * m, n, k, alpha, pa, pb, beta, pc, m == 1 ? sc : cm.ld, 0,
                      0, 0, 1);
      return;
    }
  }

  // Strided batches over the innermost batch dim, looping over the others.
  const int nd = int(L.sizes.size());
  const int64_t inner = L.sizes[size_t(nd - 1)];
  const int64_t outer = nb / inner;
  const int64_t esize = int64_t(dtype_size(dt));
  std::vector<int64_t> idx(size_t(nd), 0);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t off[3] = {0, 0, 0};
    for (int d = 0; d + 1 < nd; ++d)
      for (int q = 0; q < 3; ++q) off[q] += idx[size_t(d)] * L.strides[size_t(q)][size_t(d)];
    strided_batched(h, dt, A, B, m, n, k, alpha, pa + off[0] * esize, pb + off[1] * esize, beta,
                    pc + off[2] * esize, cm.ld, L.strides[0][size_t(nd - 1)],
                    L.strides[1][size_t(nd - 1)], L.strides[2][size_t(nd - 1)], inner);
    for (int d = nd - 2; d >= 0; --d) {  // next outer index, row-major
      if (++idx[size_t(d)] < L.sizes[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
  }
}

// The largest power of two (up to 256) dividing the address: cuBLASLt's
// heuristics otherwise assume 256-byte aligned operands.
uint32_t alignment_of(const void* p) {
  uint32_t a = 256;
  while (a > 1 && (reinterpret_cast<uintptr_t>(p) % a) != 0) a >>= 1;
  return a;
}

// RAII for the cuBLASLt descriptors of one call.
struct LtDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// y (R, N) row-major = epilogue(x (R, K) @ w (N, K)^T + bias) through
// cuBLASLt; with `aux`, the pre-GELU values go to aux (R, N) too. Returns
// false when cuBLASLt offers no algorithm for the problem.
bool lt_linear(const Tensor& x, const Tensor& w, const Tensor& bias_in, Tensor& y, bool gelu,
               Tensor* aux) {
  const int64_t rows = x.size(0), k = x.size(1), n = w.size(0);
  const GemmMat ym = gemm_mat(y);
  if (!ym.ok || ym.trans) return false;
  Operand A = gemm_operand(x);                  // row-major a: (R, K)
  Operand B = gemm_operand(w.transpose(0, 1));  // row-major b: (K, N)
  // The bias vector must be packed; a fresh copy is also 256-byte aligned.
  Tensor bias = bias_in.is_contiguous() && alignment_of(bias_in.raw_data()) >= 16
                    ? bias_in
                    : bias_in.clone();  // (N)
  const DType dt = y.dtype();
  const cudaDataType_t t = cuda_type(dt);
  Handles& h = handles_for(y.device());
  const cudaStream_t stream = ::keel::cuda::current_stream(y.device().index);

  Tensor aux_buf;
  int64_t aux_ld = 0;
  if (aux) {
    aux_ld = (n + 7) / 8 * 8;                         // cuBLASLt: a multiple of 8
    aux_buf = empty({rows, aux_ld}, dt, y.device());  // (R, N rounded up to 8)
  }

  LtDescs D;
  const cublasOperation_t opb = op_of(B.mat), opa = op_of(A.mat);
  KEEL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&D.op, compute_type(dt), CUDA_R_32F));
  KEEL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(D.op, CUBLASLT_MATMUL_DESC_TRANSA, &opb, sizeof opb));
  KEEL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(D.op, CUBLASLT_MATMUL_DESC_TRANSB, &opa, sizeof opa));
  const cublasLtEpilogue_t epi =
      gelu ? (aux ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS)
           : CUBLASLT_EPILOGUE_BIAS;
  KEEL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(D.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  const void* bias_ptr = bias.raw_data();
  KEEL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(D.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                   &bias_ptr, sizeof bias_ptr));
  if (aux) {
    void* aux_ptr = aux_buf.raw_data();
    KEEL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        D.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux_ptr, sizeof aux_ptr));
    KEEL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(D.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                     &aux_ld, sizeof aux_ld));
  }
  // Stored (pre-op) shapes, column-major: b is (N x K) as stored when not
  // transposed, (K x N) when it is; a likewise with (K x R) / (R x K).
  KEEL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&D.a, t, uint64_t(B.mat.trans ? k : n),
                                               uint64_t(B.mat.trans ? n : k), B.mat.ld));
  KEEL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&D.b, t, uint64_t(A.mat.trans ? rows : k),
                                               uint64_t(A.mat.trans ? k : rows), A.mat.ld));
  KEEL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&D.d, t, uint64_t(n), uint64_t(rows), ym.ld));

  KEEL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&D.pref));
  const uint64_t ws = kWorkspaceBytes;
  KEEL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      D.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  // Split-K partial sums only in f32 (the compute type), never in the output
  // type (INPLACE and OUTPUT_TYPE add bf16/f16 partials): f32 accumulation,
  // as the CPU's.
  const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  KEEL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      D.pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof schemes));
  const uint32_t al_a = alignment_of(B.t.raw_data()), al_b = alignment_of(A.t.raw_data()),
                 al_d = alignment_of(y.raw_data());
  KEEL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      D.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
  KEEL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      D.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
  KEEL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      D.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d));
  KEEL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      D.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d));

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(h.lt, D.op, D.a, D.b, D.d, D.d, D.pref, 1, &result, &found);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found == 0))
    return false;
  KEEL_CUBLAS_CHECK(st);

  const float alpha = 1.0f, beta = 0.0f;
  KEEL_CUBLAS_CHECK(cublasLtMatmul(h.lt, D.op, &alpha, B.t.raw_data(), D.a, A.t.raw_data(), D.b,
                                   &beta, y.raw_data(), D.d, y.raw_data(), D.d, &result.algo,
                                   h.workspace.raw_data(), kWorkspaceBytes, stream));
  if (aux) *aux = aux_buf.narrow(1, 0, n);  // (R, N), rows aux_ld apart
  return true;
}

}  // namespace

void gemm(const Tensor& a, const Tensor& b, Tensor& out, double alpha, double beta) {
  gemm_impl(a, b, out, float(alpha), float(beta));
}

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool gelu,
            Tensor* pre_activation) {
  const int64_t rows = x.size(0), k = x.size(1), n = w.size(0);
  if (rows > 0 && n > 0 && k > 0 && lt_linear(x, w, bias, y, gelu, pre_activation)) return;
  // No fused kernel for this problem (or an empty one): the GEMM adds onto
  // the broadcast bias, and GELU runs as its own kernel.
  y.copy_(bias);
  gemm_impl(x, w.transpose(0, 1), y, 1.0f, 1.0f);
  if (!gelu) return;
  if (pre_activation) *pre_activation = y.clone();  // (R, N)
  y.copy_(unary(UnaryOp::GeluTanh, y));
}

}  // namespace keel::kernels::cuda
