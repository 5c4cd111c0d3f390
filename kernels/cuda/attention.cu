// CUDA fused attention: picks a kernel family per call and launches it.
//   - bf16/f16 with D in {64, 128}: the tensor-core kernels
//     (kernels/cuda/attention_tc.cuh). They read rows with 16-byte cp.async,
//     so q, k, v (and dout) need D contiguous and 16-byte aligned rows;
//     strided views such as (B, T, H, D) transposed to (B, H, T, D), which is
//     what the model's QKV split gives, qualify as they are; anything else is
//     copied to a contiguous tensor first.
//   - everything else up to D = 256 (f32, other head dims): the generic
//     kernels (kernels/cuda/attention_generic.cuh), reading any strides.
//   - D > 256: refused with a keel::Error naming D.
// The backward first computes delta = rowsum(dout * out) - dlse per row, then
// dK/dV (parallel over key tiles) and dQ (parallel over query tiles) in two
// kernels without atomics: gradients are bit-identical run to run.
// Also the ring-attention merge of (out, lse) pairs, elementwise over rows.
// The CPU oracle is kernels/cpu/attention.cpp; AttentionBlocks (the CPU's
// tile sizes) do not apply here, the CUDA tiles are fixed per kernel.
#include <cmath>
#include <limits>

#include "kernels/cuda/attention_generic.cuh"
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda {

namespace {

using attn::BackwardArgs;
using attn::ForwardArgs;
using attn::Operand;
using attn::RowStat;

// ---- small kernels -----------------------------------------------------------------------

constexpr int kRowWarps = 8;  // rows per block in the row kernels (a warp per row)

// delta[r] = sum_d dout[r, d] * out[r, d] - dlse[r]: the softmax backward's
// row term (kernels/cpu/attention.cpp, Backward::compute_di).
template <typename T>
__global__ void __launch_bounds__(kRowWarps * 32)
    attention_delta(Operand out, Operand dout, const float* dlse, float* delta, int H, int Tq,
                    int D, int64_t rows) {
  const int64_t r = int64_t(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
  if (r >= rows) return;  // whole warps
  const int lane = int(threadIdx.x) & 31;
  const int64_t bh = r / Tq;
  const int i = int(r % Tq), b = int(bh / H), h = int(bh % H);
  const T* o = out.row<const T>(b, h, i);
  const T* g = dout.row<const T>(b, h, i);
  float acc = 0.0f;
  for (int d = lane; d < D; d += 32) acc += to_f32(o[d * out.sd]) * to_f32(g[d * dout.sd]);
  acc = warp_allreduce(acc, SumOp{});
  if (lane == 0) delta[r] = acc - (dlse ? dlse[r] : 0.0f);
}

// The merge of attention_merge_ (kernels/attention.h), a warp per row; the
// same formula as the CPU's merge_impl.
template <typename T>
__global__ void __launch_bounds__(kRowWarps * 32)
    attention_merge_rows(Operand out, RowStat lse, Operand blk, RowStat lse_blk, int H, int Tn,
                         int D, int64_t rows) {
  const int64_t r = int64_t(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = int(threadIdx.x) & 31;
  const int t = int(r % Tn), h = int((r / Tn) % H), b = int(r / (int64_t(Tn) * H));
  float* o = out.row<float>(b, h, t);
  const T* ob = blk.row<const T>(b, h, t);
  float& a_ref = lse.at(b, h, t);
  const float a = a_ref, c = lse_blk.at(b, h, t);
  if (c == -INFINITY) return;  // the block holds no keys for this row
  float lnew = c;
  if (a == -INFINITY) {  // the running pair holds none yet
    for (int d = lane; d < D; d += 32) o[d * out.sd] = to_f32(ob[d * blk.sd]);
  } else {
    // logaddexp without overflow: max + log1p(exp(-|a - c|)).
    lnew = fmaxf(a, c) + log1pf(expf(-fabsf(a - c)));
    const float wa = expf(a - lnew), wb = expf(c - lnew);
    for (int d = lane; d < D; d += 32)
      o[d * out.sd] = o[d * out.sd] * wa + to_f32(ob[d * blk.sd]) * wb;
  }
  __syncwarp();  // every lane has read lse before lane 0 overwrites it
  if (lane == 0) a_ref = lnew;
}

// ---- operands ------------------------------------------------------------------------------

Operand operand(const Tensor& t) {
  return {t.raw_data(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}
RowStat row_stat(const Tensor& t) {
  return {static_cast<float*>(t.raw_data()), t.stride(0), t.stride(1), t.stride(2)};
}

bool tensor_core_dtype_and_dim(DType dt, int64_t D) {
  return (dt == DType::BF16 || dt == DType::F16) && (D == 64 || D == 128);
}

// Rows the tensor-core kernels can fetch with 16-byte cp.async: D contiguous,
// every row start 16-byte aligned (strides of B, H, T multiples of 8 elements
// where the dim is longer than 1, and an aligned base).
bool rows_16b_aligned(const Tensor& t) {
  if (t.size(3) > 1 && t.stride(3) != 1) return false;
  const int64_t per16 = 16 / int64_t(t.element_size());
  for (int d = 0; d < 3; ++d)
    if (t.size(d) > 1 && t.stride(d) % per16 != 0) return false;
  return aligned16(t.raw_data());
}

// t itself when the tensor-core kernels can read it, else a contiguous copy
// (fresh allocations are aligned well past 16 bytes).
Tensor tc_operand(const Tensor& t) {
  if (rows_16b_aligned(t)) return t;
  Tensor c = t.clone();
  KEEL_ASSERT(rows_16b_aligned(c));
  return c;
}

void check_cuda_sizes(const char* op, const Tensor& q, const Tensor& k) {
  const int64_t D = q.size(3);
  KEEL_CHECK(D <= attn::kGenericMaxD, op, ": head dim D = ", D,
             " is not supported on CUDA (the kernels take D <= ", attn::kGenericMaxD, "), q ",
             q.describe());
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  KEEL_CHECK(q.size(2) <= kIntMax && k.size(2) <= kIntMax && q.size(0) * q.size(1) <= kIntMax, op,
             ": sequence lengths and B * H must fit in 32 bits, got q ", q.shape_string(), ", k ",
             k.shape_string());
}

// Blocks for `tiles` tiles per (b, h), one launch dimension.
unsigned grid_of(int64_t tiles, int64_t BH, const char* op) {
  const int64_t n = tiles * BH;
  KEEL_CHECK(n <= std::numeric_limits<int32_t>::max(), op, ": ", n,
             " thread blocks exceed the launch limit");
  return unsigned(n);
}

template <typename Kernel>
void set_smem(Kernel kernel, int bytes) {
  KEEL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

// ---- forward -------------------------------------------------------------------------------

template <typename T, int kD, bool kAccum>
void launch_tc_forward(const ForwardArgs& a, bool causal, cudaStream_t stream, const char* op) {
  constexpr int smem = attn::tc_forward_smem<kD>();
  auto kernel =
      causal ? attn::tc_forward<T, kD, true, kAccum> : attn::tc_forward<T, kD, false, kAccum>;
  set_smem(kernel, smem);
  kernel<<<grid_of(a.q_tiles, a.BH, op), attn::kTcThreads, smem, stream>>>(a);
  KEEL_CUDA_CHECK(cudaGetLastError());
}

// The sizes and scales every kernel's arguments carry.
template <typename Args>
void set_sizes(Args& a, const Tensor& q, const Tensor& k, float scale) {
  a.H = int(q.size(1));
  a.BH = int(q.size(0) * q.size(1));
  a.Tq = int(q.size(2));
  a.Tk = int(k.size(2));
  a.D = int(q.size(3));
  a.scale = scale;
  a.scale_log2 = scale * attn::kLog2e;
}

template <typename T, bool kAccum>
void forward_typed(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, float scale,
                   Tensor& out, Tensor& lse, const char* op) {
  ForwardArgs a;
  set_sizes(a, q, k, scale);
  a.lse = row_stat(lse);
  cudaStream_t stream = stream_of(q);
  if constexpr (!std::is_same_v<T, float>) {
    if (tensor_core_dtype_and_dim(q.dtype(), a.D)) {
      Tensor qc = tc_operand(q), kc = tc_operand(k), vc = tc_operand(v);
      a.q = operand(qc);
      a.k = operand(kc);
      a.v = operand(vc);
      // The running f32 output is read and written as float pairs: D
      // contiguous and 8-byte aligned rows, else work on a contiguous copy.
      Tensor o = out;
      if constexpr (kAccum) {
        const bool pairs = out.stride(3) == 1 && out.stride(0) % 2 == 0 && out.stride(1) % 2 == 0 &&
                           out.stride(2) % 2 == 0 &&
                           (reinterpret_cast<uintptr_t>(out.raw_data()) & 7u) == 0;
        if (!pairs) o = out.clone();
      }
      a.out = operand(o);
      a.q_tiles = int((a.Tq + attn::kTcFwdRows - 1) / attn::kTcFwdRows);
      if (a.D == 64)
        launch_tc_forward<T, 64, kAccum>(a, causal, stream, op);
      else
        launch_tc_forward<T, 128, kAccum>(a, causal, stream, op);
      if (!o.same(out)) out.copy_(o);
      return;
    }
  }
  a.q = operand(q);
  a.k = operand(k);
  a.v = operand(v);
  a.out = operand(out);
  a.q_tiles = int((a.Tq + attn::kGenericWarps - 1) / attn::kGenericWarps);
  const int smem = attn::generic_smem_floats(a.D) * int(sizeof(float));
  auto kernel = attn::generic_forward<T, kAccum>;
  set_smem(kernel, smem);
  kernel<<<grid_of(a.q_tiles, a.BH, op), attn::kGenericThreads, smem, stream>>>(a, causal);
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <bool kAccum>
void forward_any(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, float scale,
                 Tensor& out, Tensor& lse, const char* op) {
  if (q.size(0) * q.size(1) * q.size(2) == 0) return;
  check_cuda_sizes(op, q, k);
  KEEL_CUDA_DISPATCH_FLOAT(q.dtype(), op,
                           forward_typed<T, kAccum>(q, k, v, causal, scale, out, lse, op));
}

// ---- backward ------------------------------------------------------------------------------

template <typename T, int kD>
void launch_tc_backward(const BackwardArgs& base, bool causal, cudaStream_t stream,
                        const char* op) {
  constexpr int smem = attn::tc_backward_smem<kD>();
  BackwardArgs a = base;
  a.tiles = int((a.Tk + attn::kTcBwdRows - 1) / attn::kTcBwdRows);
  auto dkdv = causal ? attn::tc_backward_dkdv<T, kD, true> : attn::tc_backward_dkdv<T, kD, false>;
  set_smem(dkdv, smem);
  dkdv<<<grid_of(a.tiles, a.BH, op), attn::kTcThreads, smem, stream>>>(a);
  KEEL_CUDA_CHECK(cudaGetLastError());
  a.tiles = int((a.Tq + attn::kTcBwdRows - 1) / attn::kTcBwdRows);
  auto dq = causal ? attn::tc_backward_dq<T, kD, true> : attn::tc_backward_dq<T, kD, false>;
  set_smem(dq, smem);
  dq<<<grid_of(a.tiles, a.BH, op), attn::kTcThreads, smem, stream>>>(a);
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void backward_typed(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                    const Tensor& dout, const Tensor& lse, const Tensor& dlse, bool causal,
                    float scale, Tensor& dq, Tensor& dk, Tensor& dv, const char* op) {
  BackwardArgs a;
  set_sizes(a, q, k, scale);
  cudaStream_t stream = stream_of(q);

  Tensor delta = empty({q.size(0), q.size(1), q.size(2)}, DType::F32, q.device());  // (B, H, Tq)
  const int64_t rows = int64_t(a.BH) * a.Tq;
  attention_delta<T><<<grid_of((rows + kRowWarps - 1) / kRowWarps, 1, "attention backward"),
                       kRowWarps * 32, 0, stream>>>(
      operand(out), operand(dout), dlse.defined() ? data_ptr<const float>(dlse) : nullptr,
      data_ptr<float>(delta), a.H, a.Tq, a.D, rows);
  KEEL_CUDA_CHECK(cudaGetLastError());
  a.lse = data_ptr<const float>(lse);
  a.delta = data_ptr<const float>(delta);
  a.dq = operand(dq);
  a.dk = operand(dk);
  a.dv = operand(dv);

  if constexpr (!std::is_same_v<T, float>) {
    if (tensor_core_dtype_and_dim(q.dtype(), a.D)) {
      Tensor qc = tc_operand(q), kc = tc_operand(k), vc = tc_operand(v), gc = tc_operand(dout);
      a.q = operand(qc);
      a.k = operand(kc);
      a.v = operand(vc);
      a.dout = operand(gc);
      if (a.D == 64)
        launch_tc_backward<T, 64>(a, causal, stream, op);
      else
        launch_tc_backward<T, 128>(a, causal, stream, op);
      return;
    }
  }
  a.q = operand(q);
  a.k = operand(k);
  a.v = operand(v);
  a.dout = operand(dout);
  const int smem = attn::generic_smem_floats(a.D) * int(sizeof(float));
  a.tiles = int((a.Tk + attn::kGenericWarps - 1) / attn::kGenericWarps);
  auto dkdv = attn::generic_backward_dkdv<T>;
  set_smem(dkdv, smem);
  dkdv<<<grid_of(a.tiles, a.BH, op), attn::kGenericThreads, smem, stream>>>(a, causal);
  KEEL_CUDA_CHECK(cudaGetLastError());
  a.tiles = int((a.Tq + attn::kGenericWarps - 1) / attn::kGenericWarps);
  auto dqk = attn::generic_backward_dq<T>;
  set_smem(dqk, smem);
  dqk<<<grid_of(a.tiles, a.BH, op), attn::kGenericThreads, smem, stream>>>(a, causal);
  KEEL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

// out (B, H, Tq, D) contiguous in q's dtype, lse (B, H, Tq) f32.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, float scale,
                       Tensor& out, Tensor& lse) {
  forward_any<false>(q, k, v, causal, scale, out, lse, "attention");
}

// (out (B, H, Tq, D) f32, lse (B, H, Tq) f32), any strides: the running pair
// that the attention over k, v is merged into.
void attention_forward_accumulate(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                  float scale, Tensor& out, Tensor& lse) {
  forward_any<true>(q, k, v, causal, scale, out, lse, "attention_forward_accumulate_");
}

// dout in q's dtype; lse and dlse (or undefined) contiguous f32 (B, H, Tq);
// dq, dk, dv contiguous in q's dtype, every element written.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& dout, const Tensor& lse, const Tensor& dlse, bool causal,
                        float scale, Tensor& dq, Tensor& dk, Tensor& dv) {
  const char* op = "attention backward";
  if (q.size(0) * q.size(1) == 0) return;
  if (q.size(2) == 0) {  // no queries: the keys get no gradient
    cudaStream_t stream = stream_of(q);
    KEEL_CUDA_CHECK(
        cudaMemsetAsync(dk.raw_data(), 0, size_t(dk.numel()) * dk.element_size(), stream));
    KEEL_CUDA_CHECK(
        cudaMemsetAsync(dv.raw_data(), 0, size_t(dv.numel()) * dv.element_size(), stream));
    return;
  }
  check_cuda_sizes(op, q, k);
  KEEL_CUDA_DISPATCH_FLOAT(
      q.dtype(), op,
      backward_typed<T>(q, k, v, out, dout, lse, dlse, causal, scale, dq, dk, dv, op));
}

// out, lse f32 running pair; out_blk any float dtype; lse_blk f32; any strides.
void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_blk, const Tensor& lse_blk) {
  const int64_t B = out.size(0), H = out.size(1), Tn = out.size(2), D = out.size(3);
  const int64_t rows = B * H * Tn;
  if (rows == 0) return;
  KEEL_CHECK(Tn <= std::numeric_limits<int32_t>::max() && H <= std::numeric_limits<int32_t>::max(),
             "attention_merge_: sizes must fit in 32 bits, got ", out.shape_string());
  cudaStream_t stream = stream_of(out);
  const unsigned blocks = grid_of((rows + kRowWarps - 1) / kRowWarps, 1, "attention_merge_");
  KEEL_CUDA_DISPATCH_FLOAT(out_blk.dtype(), "attention_merge_", {
    attention_merge_rows<T>
        <<<blocks, kRowWarps * 32, 0, stream>>>(operand(out), row_stat(lse), operand(out_blk),
                                                row_stat(lse_blk), int(H), int(Tn), int(D), rows);
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace keel::kernels::cuda
