// Warp-level building blocks of the tensor-core attention kernels
// (kernels/cuda/attention_tc.cuh): mma.sync m16n8k16 with f32 accumulators,
// ldmatrix from swizzled shared-memory tiles, cp.async 16-byte copies with
// zero fill, and fast exp2. Included by kernels/cuda/attention*.cu only.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with
// floating point type"), with g = lane / 4 and t = lane % 4:
//   A (16 x 16, row major), 4 x b32:  a[0] = A[g][2t..2t+1],   a[1] = A[g+8][2t..2t+1],
//                                     a[2] = A[g][2t+8..2t+9], a[3] = A[g+8][2t+8..2t+9]
//   B (16 x 8, "col"), 2 x b32:       b[0] = B[2t..2t+1][g],   b[1] = B[2t+8..2t+9][g]
//   C (16 x 8, f32), 4 x f32:         c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1]
// The lower-indexed element of a pair sits in the low 16 bits.
//
// ldmatrix.x4 loads four 8 x 8 b16 matrices; lanes 8i..8i+7 give the row
// addresses of matrix i, and every lane receives, of matrix i, row lane / 4,
// elements 2(lane % 4) and +1 (with .trans: column lane / 4, rows 2(lane % 4)
// and +1). Hence:
//   - an A fragment of a row-major [m][k] tile: lane gives row (lane % 16),
//     16-byte chunk (lane / 16) of the 16-column step;
//   - two B fragments (n-tiles n0 and n0 + 8) of B[k][n] = X[n][k], X row-major
//     [n][k] (K for S = Q K^T): lane gives row n0 + (lane % 8) + 8 (lane / 16),
//     chunk (lane / 8) % 2;
//   - two B fragments of B[k][n] = X[k][n], X row-major [k][n] (V for O = P V),
//     with .trans: lane gives row k0 + (lane % 8) + 8 ((lane / 8) % 2), chunk
//     lane / 16.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace keel::kernels::cuda::attn {

// ---- tiles in shared memory ------------------------------------------------------

// A tile of rows of kD 16-bit elements, row r at r * kD. Row r's 16-byte
// chunk c is stored at chunk c ^ (r % 8): ldmatrix reads one chunk of 8
// consecutive rows per matrix, and rows are 128 or 256 bytes long, so without
// the swizzle all 8 would sit in the same four banks; with it they cover all
// 32 banks. cp.async writes whole rows, so its stores stay conflict-free too.
template <int kD>
__device__ __forceinline__ int swz(int row, int chunk) {
  static_assert(kD % 64 == 0, "the swizzle needs rows of at least 8 chunks");
  return row * kD + ((chunk ^ (row & 7)) << 3);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- cp.async --------------------------------------------------------------------

// 16 bytes global -> shared, bypassing L1; src_bytes = 0 writes 16 zero bytes
// (tail rows), reading nothing from src.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Rows [t0, t0 + kRows) of one (b, h) slice of a (B, H, T, kD) operand whose
// rows start `row_stride` elements apart (D contiguous, rows 16-byte
// aligned; the launcher makes sure) into a swizzled tile; rows >= T are
// zero-filled so tails read zeros, never garbage that could turn 0 * x into NaN.
template <int kD, int kRows, int kThreads, typename T>
__device__ __forceinline__ void load_tile_async(T* tile, const T* base, int64_t row_stride, int t0,
                                                int T_len, int tid) {
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  static_assert((kRows * kChunks) % kThreads == 0);
  const uint32_t dst0 = smem_addr(tile);
#pragma unroll
  for (int u = 0; u < kRows * kChunks / kThreads; ++u) {
    const int idx = tid + u * kThreads;
    const int r = idx / kChunks, c = idx % kChunks;
    const bool live = t0 + r < T_len;
    const T* src = live ? base + int64_t(t0 + r) * row_stride + c * 8 : base;
    cp_async16(dst0 + uint32_t(swz<kD>(r, c)) * 2u, src, live ? 16 : 0);
  }
}

// ---- ldmatrix ----------------------------------------------------------------------

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// A fragment (rows row0..row0+15, columns 16 kk..16 kk+15) of a swizzled tile.
template <int kD>
__device__ __forceinline__ void load_a(uint32_t tile, int row0, int kk, int lane,
                                       uint32_t (&a)[4]) {
  const int r = row0 + (lane & 15), c = 2 * kk + (lane >> 4);
  ldsm_x4(tile + uint32_t(swz<kD>(r, c)) * 2u, a);
}

// B fragments for n-tiles n0 and n0 + 8 at k-step kk, B[k][n] = X[n][k]:
// b[0..1] for rows n0..n0+7 of X, b[2..3] for rows n0+8..n0+15.
template <int kD>
__device__ __forceinline__ void load_b_rows(uint32_t tile, int n0, int kk, int lane,
                                            uint32_t (&b)[4]) {
  const int r = n0 + (lane & 7) + ((lane >> 4) << 3), c = 2 * kk + ((lane >> 3) & 1);
  ldsm_x4(tile + uint32_t(swz<kD>(r, c)) * 2u, b);
}

// B fragments for n-tiles 16 dp and 16 dp + 8 (columns of X) at k rows
// k0..k0+15, B[k][n] = X[k][n]: b[0..1] for the first n-tile, b[2..3] the second.
template <int kD>
__device__ __forceinline__ void load_b_cols(uint32_t tile, int k0, int dp, int lane,
                                            uint32_t (&b)[4]) {
  const int r = k0 + (lane & 7) + (((lane >> 3) & 1) << 3), c = 2 * dp + (lane >> 4);
  ldsm_x4_trans(tile + uint32_t(swz<kD>(r, c)) * 2u, b);
}

// ---- mma -----------------------------------------------------------------------------

// c += a b on one 16 x 8 x 16 tile, f32 accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    static_assert(std::is_same_v<T, __half>, "tensor-core attention takes bf16 or f16");
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two f32 values rounded to nearest-even into one b32 of T (lo in the low half).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

// The A fragment of one 16-wide k-step from two f32 accumulator tiles that
// cover its columns 0..7 (c0) and 8..15 (c1): the accumulator layout of a
// 16 x 8 tile is the A layout of a 16 x 8 half-step, so scores turn into
// the next product's operand without leaving registers.
template <typename T>
__device__ __forceinline__ void acc_to_a(const float (&c0)[4], const float (&c1)[4],
                                         uint32_t (&a)[4]) {
  a[0] = pack2<T>(c0[0], c0[1]);
  a[1] = pack2<T>(c0[2], c0[3]);
  a[2] = pack2<T>(c1[0], c1[1]);
  a[3] = pack2<T>(c1[2], c1[3]);
}

// ---- math ------------------------------------------------------------------------------

// 2^x by the SFU (relative error ~2^-22); exp2(-inf) = +0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Max and sum over the four lanes of a quad (the lanes that share a row of
// an accumulator tile).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

}  // namespace keel::kernels::cuda::attn
