// Tensor-core attention kernels (FlashAttention-2's algorithm) for bf16 and
// f16 with D in {64, 128}. Four warps per block; mma.sync m16n8k16 with f32
// accumulators; operands staged in swizzled shared-memory tiles by cp.async
// and read with ldmatrix (kernels/cuda/attention_mma.cuh). Included by
// kernels/cuda/attention.cu only.
//
// Forward: a block owns 64 query rows of one (b, h), a warp 16 of them, and
// walks 64-key tiles. The warp keeps its Q fragments, the output accumulator
// (16 x D) and the running row max and sum in registers; scores come out of
// the mma in the accumulator layout, which is also the A-operand layout, so
// P = exp2(S - max) goes straight into P V. Scores are pre-multiplied by
// scale * log2(e) so the exponentials are single ex2 instructions. Loads
// overlap compute: V_j is fetched while S_j = Q K_j^T is computed, K_{j+1}
// while P_j V_j is.
//
// Backward (recomputing P from the saved lse), deterministic: no atomics.
//   - dK, dV: a block owns 64 keys (a warp 16) and walks query tiles,
//     computing the transposed products S^T = K Q^T and dP^T = V dO^T so
//     that each warp's dK and dV rows stay in its own registers:
//     dV += P^T dO, dK += dS^T Q, with dS = P * (dP - delta).
//   - dQ: a block owns 64 query rows (a warp 16) and walks key tiles:
//     dQ += dS K.
// Query/key tiles are double-buffered: the next tile's cp.async runs while
// the current one is computed.
//
// Masking: a key tile that holds keys >= Tk, or that crosses the causal
// diagonal of any row of the block, is masked element by element (S = -inf
// in the forward, P = 0 in the backward); other tiles skip the test, and
// causal blocks skip key tiles past their last visible key. Tail rows of Q,
// K, V, dO are zero-filled in shared memory; tail query rows get lse = +inf
// in the backward, so their P is exactly 0.
#pragma once

#include <cmath>

#include "kernels/cuda/attention_args.cuh"
#include "kernels/cuda/attention_mma.cuh"

namespace keel::kernels::cuda::attn {

inline constexpr int kTcThreads = 128;  // four warps
inline constexpr int kTcFwdRows = 64;   // query rows per forward block
inline constexpr int kTcFwdKeys = 64;   // keys per forward step

// Backward tiles: 64 rows per block (16 per warp); the inner step is 32
// rows at D = 128, so that the two D-wide accumulators of the dK/dV kernel
// plus the step's S^T and dP^T fit in registers.
template <int kD>
inline constexpr int kTcBwdStep = kD == 128 ? 32 : 64;
inline constexpr int kTcBwdRows = 64;

template <int kD>
constexpr int tc_forward_smem() {
  return (kTcFwdRows + 2 * kTcFwdKeys) * kD * 2;
}
template <int kD>
constexpr int tc_backward_smem() {
  // Resident: two 64-row tiles. Streamed: two operands x two buffers of
  // kTcBwdStep rows, plus lse and delta per streamed row (dK/dV kernel).
  return (2 * kTcBwdRows + 4 * kTcBwdStep<kD>)*kD * 2 + 4 * kTcBwdStep<kD> * 4;
}

// ---- forward ------------------------------------------------------------------------

// kAccum: (out f32, lse) hold a running pair over other keys that this
// block's keys are merged into (ring attention): the online softmax starts
// from it instead of from (0, -inf).
template <typename T, int kD, bool kCausal, bool kAccum>
__global__ void __launch_bounds__(kTcThreads) tc_forward(ForwardArgs a) {
  constexpr int kBr = kTcFwdRows, kBc = kTcFwdKeys, kN = kD / 8, kS = kBc / 8;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + kBr * kD;
  T* sV = sK + kBc * kD;
  const uint32_t aQ = smem_addr(sQ), aK = smem_addr(sK), aV = smem_addr(sV);

  const int tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  // The last query tiles see the most keys under a causal mask: start them first.
  const int bh = int(blockIdx.x % unsigned(a.BH));
  const int qt = a.q_tiles - 1 - int(blockIdx.x / unsigned(a.BH));
  const int b = bh / a.H, h = bh % a.H;
  const int q0 = qt * kBr, off = a.Tk - a.Tq;
  const T* Qb = a.q.row<T>(b, h, 0);
  const T* Kb = a.k.row<T>(b, h, 0);
  const T* Vb = a.v.row<T>(b, h, 0);

  // Keys past the last one visible to the block's last row are skipped.
  const int kend = kCausal ? min(a.Tk, min(q0 + kBr, a.Tq) + off) : a.Tk;
  const int n_tiles = (kend + kBc - 1) / kBc;

  load_tile_async<kD, kBr, kTcThreads>(sQ, Qb, a.q.st, q0, a.Tq, tid);
  load_tile_async<kD, kBc, kTcThreads>(sK, Kb, a.k.st, 0, a.Tk, tid);
  cp_async_commit();

  // This thread's rows of the accumulator tiles: r[0] = g, r[1] = g + 8.
  const int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  float acc[kN][4];
  float m[2] = {-INFINITY, -INFINITY};  // running max, base-2 units
  float l[2] = {0.0f, 0.0f};            // this lane's part of the running sum
#pragma unroll
  for (int n = 0; n < kN; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  if constexpr (kAccum) {
    // (out, lse) = (A / L, log L) over earlier keys is the state (acc = out,
    // m = lse, sum = 1): the sum is held by lane t == 0 of the quad, as the
    // quad's partial sums are added at the end.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (rows[r] >= a.Tq) continue;
      const float lr = a.lse.at(b, h, rows[r]);
      if (!(lr > -INFINITY)) continue;  // no keys yet (or NaN): start empty
      m[r] = lr * kLog2e;
      l[r] = t == 0 ? 1.0f : 0.0f;
      const float* o = a.out.row<float>(b, h, rows[r]);
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        const float2 v = *reinterpret_cast<const float2*>(o + n * 8 + 2 * t);
        acc[n][2 * r] = v.x;
        acc[n][2 * r + 1] = v.y;
      }
    }
  }

  uint32_t qf[kD / 16][4];
  for (int j = 0; j < n_tiles; ++j) {
    const int j0 = j * kBc;
    cp_async_wait<0>();
    __syncthreads();  // K_j (and Q) landed; every warp is done with V_{j-1}
    load_tile_async<kD, kBc, kTcThreads>(sV, Vb, a.v.st, j0, a.Tk, tid);
    cp_async_commit();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) load_a<kD>(aQ, warp * 16, kk, lane, qf[kk]);
    }

    // S = Q K_j^T: 16 x 64 per warp.
    float s[kS][4];
#pragma unroll
    for (int n = 0; n < kS; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kS / 2; ++np) {
        uint32_t bf[4];
        load_b_rows<kD>(aK, np * 16, kk, lane, bf);
        mma16816<T>(s[2 * np], qf[kk], bf[0], bf[1]);
        mma16816<T>(s[2 * np + 1], qf[kk], bf[2], bf[3]);
      }
    }

    // Mask keys past Tk and (causal) after each row's diagonal.
    const bool need_mask = j0 + kBc > a.Tk || (kCausal && j0 + kBc - 1 > q0 + off);
    if (need_mask) {
#pragma unroll
      for (int n = 0; n < kS; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = j0 + n * 8 + 2 * t + (e & 1);
          if (key >= a.Tk || (kCausal && key > rows[e >> 1] + off)) s[n][e] = -INFINITY;
        }
    }

    // Online softmax in base 2. A row all of whose keys so far are masked
    // keeps m = -inf; it exponentiates against 0 instead, so every p is 0
    // and nothing becomes NaN.
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < kS; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] *= a.scale_log2;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
      }
    float base[2], alpha[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = quad_max(mx[r]);
      base[r] = mx[r] == -INFINITY ? 0.0f : mx[r];
      alpha[r] = fast_exp2(m[r] - base[r]);
      m[r] = mx[r];
    }
#pragma unroll
    for (int n = 0; n < kS; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = fast_exp2(s[n][e] - base[e >> 1]);
        sum[e >> 1] += s[n][e];
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + sum[r];
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      acc[n][0] *= alpha[0];
      acc[n][1] *= alpha[0];
      acc[n][2] *= alpha[1];
      acc[n][3] *= alpha[1];
    }
    uint32_t pf[kS / 2][4];
#pragma unroll
    for (int kk = 0; kk < kS / 2; ++kk) acc_to_a<T>(s[2 * kk], s[2 * kk + 1], pf[kk]);

    cp_async_wait<0>();
    __syncthreads();  // V_j landed; every warp is done reading K_j
    if (j + 1 < n_tiles) {
      load_tile_async<kD, kBc, kTcThreads>(sK, Kb, a.k.st, j0 + kBc, a.Tk, tid);
      cp_async_commit();
    }

    // O += P V_j.
#pragma unroll
    for (int kk = 0; kk < kS / 2; ++kk) {
#pragma unroll
      for (int dp = 0; dp < kD / 16; ++dp) {
        uint32_t bf[4];
        load_b_cols<kD>(aV, kk * 16, dp, lane, bf);
        mma16816<T>(acc[2 * dp], pf[kk], bf[0], bf[1]);
        mma16816<T>(acc[2 * dp + 1], pf[kk], bf[2], bf[3]);
      }
    }
  }
  cp_async_wait<0>();  // nothing may be left in flight at exit (n_tiles == 0)

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float lsum = quad_sum(l[r]);
    if (rows[r] >= a.Tq) continue;
    const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
    if constexpr (kAccum) {
      float* o = a.out.row<float>(b, h, rows[r]);
#pragma unroll
      for (int n = 0; n < kN; ++n)
        *reinterpret_cast<float2*>(o + n * 8 + 2 * t) =
            make_float2(acc[n][2 * r] * inv, acc[n][2 * r + 1] * inv);
    } else {
      T* o = a.out.row<T>(b, h, rows[r]);
#pragma unroll
      for (int n = 0; n < kN; ++n)
        *reinterpret_cast<uint32_t*>(o + n * 8 + 2 * t) =
            pack2<T>(acc[n][2 * r] * inv, acc[n][2 * r + 1] * inv);
    }
    if (t == 0) a.lse.at(b, h, rows[r]) = lsum > 0.0f ? (m[r] + log2f(lsum)) * kLn2 : -INFINITY;
  }
}

// ---- backward ------------------------------------------------------------------------

// The backward's paired products for one warp's 16 resident rows: c0 = A0
// B0^T and c1 = A1 B1^T, A* resident tiles (rows `row`..+16), B* streamed
// tiles of 8 * kS rows, all kD wide in shared memory. One pass over kD
// shares the k-slices. dK/dV: (K, V) x (Q, dO) gives S^T and dP^T; dQ:
// (Q, dO) x (K, V) gives S and dP.
template <typename T, int kD, int kS>
__device__ __forceinline__ void paired_products(uint32_t a0, uint32_t a1, uint32_t b0, uint32_t b1,
                                                int row, int lane, float (&c0)[kS][4],
                                                float (&c1)[kS][4]) {
#pragma unroll
  for (int n = 0; n < kS; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) c0[n][e] = c1[n][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) {
    uint32_t f0[4], f1[4];
    load_a<kD>(a0, row, kk, lane, f0);
    load_a<kD>(a1, row, kk, lane, f1);
#pragma unroll
    for (int np = 0; np < kS / 2; ++np) {
      uint32_t bf[4];
      load_b_rows<kD>(b0, np * 16, kk, lane, bf);
      mma16816<T>(c0[2 * np], f0, bf[0], bf[1]);
      mma16816<T>(c0[2 * np + 1], f0, bf[2], bf[3]);
      load_b_rows<kD>(b1, np * 16, kk, lane, bf);
      mma16816<T>(c1[2 * np], f1, bf[0], bf[1]);
      mma16816<T>(c1[2 * np + 1], f1, bf[2], bf[3]);
    }
  }
}

template <typename T, int kD, bool kCausal>
__global__ void __launch_bounds__(kTcThreads) tc_backward_dkdv(BackwardArgs a) {
  constexpr int kBc = kTcBwdRows, kBr = kTcBwdStep<kD>, kN = kD / 8, kS = kBr / 8;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + kBc * kD;
  T* sQ = sV + kBc * kD;                                     // [2][kBr * kD]
  T* sdO = sQ + 2 * kBr * kD;                                // [2][kBr * kD]
  float* sL = reinterpret_cast<float*>(sdO + 2 * kBr * kD);  // [2][kBr]: lse * log2(e)
  float* sDl = sL + 2 * kBr;                                 // [2][kBr]: delta
  const uint32_t aK = smem_addr(sK), aV = smem_addr(sV);

  const int tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  // Under a causal mask the first key tiles are seen by the most queries.
  const int bh = int(blockIdx.x % unsigned(a.BH));
  const int kt = int(blockIdx.x / unsigned(a.BH));
  const int b = bh / a.H, h = bh % a.H;
  const int k0 = kt * kBc, off = a.Tk - a.Tq;
  const T* Qb = a.q.row<T>(b, h, 0);
  const T* dOb = a.dout.row<T>(b, h, 0);
  const float* lse = a.lse + int64_t(bh) * a.Tq;
  const float* delta = a.delta + int64_t(bh) * a.Tq;

  // Queries before k0 - off see none of these keys.
  const int first = kCausal ? max(0, k0 - off) / kBr : 0;
  const int n_tiles = (a.Tq + kBr - 1) / kBr;

  auto stage = [&](int qt, int buf) {
    const int i0 = qt * kBr;
    load_tile_async<kD, kBr, kTcThreads>(sQ + buf * kBr * kD, Qb, a.q.st, i0, a.Tq, tid);
    load_tile_async<kD, kBr, kTcThreads>(sdO + buf * kBr * kD, dOb, a.dout.st, i0, a.Tq, tid);
    for (int i = tid; i < kBr; i += kTcThreads) {
      const bool live = i0 + i < a.Tq;
      const float li = live ? lse[i0 + i] : INFINITY;
      // lse = -inf (a row without keys) or a tail row: P = exp2(s - inf) = 0.
      sL[buf * kBr + i] = li > -INFINITY ? li * kLog2e : INFINITY;
      sDl[buf * kBr + i] = live ? delta[i0 + i] : 0.0f;
    }
  };

  load_tile_async<kD, kBc, kTcThreads>(sK, a.k.row<T>(b, h, 0), a.k.st, k0, a.Tk, tid);
  load_tile_async<kD, kBc, kTcThreads>(sV, a.v.row<T>(b, h, 0), a.v.st, k0, a.Tk, tid);
  if (first < n_tiles) stage(first, 0);
  cp_async_commit();

  const int keys[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
  float dk[kN][4], dv[kN][4];
#pragma unroll
  for (int n = 0; n < kN; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.0f;

  for (int qt = first, it = 0; qt < n_tiles; ++qt, ++it) {
    const int buf = it & 1, i0 = qt * kBr;
    cp_async_wait<0>();
    __syncthreads();  // this tile landed; every warp is done with the other buffer
    if (qt + 1 < n_tiles) {
      stage(qt + 1, buf ^ 1);
      cp_async_commit();
    }
    const uint32_t aQ = smem_addr(sQ + buf * kBr * kD), adO = smem_addr(sdO + buf * kBr * kD);
    const float* L = sL + buf * kBr;
    const float* Dl = sDl + buf * kBr;

    // S^T = K Q^T and dP^T = V dO^T: 16 keys x kBr queries per warp.
    float st[kS][4], dpt[kS][4];
    paired_products<T, kD, kS>(aK, aV, aQ, adO, warp * 16, lane, st, dpt);

    // P^T = exp2(S^T - lse) (0 where masked), dS^T = P^T * (dP^T - delta).
    const bool need_mask = k0 + kBc > a.Tk || (kCausal && k0 + kBc - 1 > i0 + off);
#pragma unroll
    for (int n = 0; n < kS; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = n * 8 + 2 * t + (e & 1);  // query i0 + c
        const int key = keys[e >> 1];
        float p = fast_exp2(st[n][e] * a.scale_log2 - L[c]);
        if (need_mask && (key >= a.Tk || (kCausal && key > i0 + c + off))) p = 0.0f;
        st[n][e] = p;
        dpt[n][e] = p * (dpt[n][e] - Dl[c]);
      }

      // dV += P^T dO, dK += dS^T Q (the k dimension is the queries).
#pragma unroll
    for (int kq = 0; kq < kS / 2; ++kq) {
      uint32_t pa[4], da[4];
      acc_to_a<T>(st[2 * kq], st[2 * kq + 1], pa);
      acc_to_a<T>(dpt[2 * kq], dpt[2 * kq + 1], da);
#pragma unroll
      for (int dp = 0; dp < kD / 16; ++dp) {
        uint32_t bf[4];
        load_b_cols<kD>(adO, kq * 16, dp, lane, bf);
        mma16816<T>(dv[2 * dp], pa, bf[0], bf[1]);
        mma16816<T>(dv[2 * dp + 1], pa, bf[2], bf[3]);
        load_b_cols<kD>(aQ, kq * 16, dp, lane, bf);
        mma16816<T>(dk[2 * dp], da, bf[0], bf[1]);
        mma16816<T>(dk[2 * dp + 1], da, bf[2], bf[3]);
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (keys[r] >= a.Tk) continue;
    T* dkr = a.dk.row<T>(b, h, keys[r]);
    T* dvr = a.dv.row<T>(b, h, keys[r]);
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      *reinterpret_cast<uint32_t*>(dkr + n * 8 + 2 * t) =
          pack2<T>(dk[n][2 * r] * a.scale, dk[n][2 * r + 1] * a.scale);
      *reinterpret_cast<uint32_t*>(dvr + n * 8 + 2 * t) = pack2<T>(dv[n][2 * r], dv[n][2 * r + 1]);
    }
  }
}

// ---- backward: dQ ----------------------------------------------------------------------

template <typename T, int kD, bool kCausal>
__global__ void __launch_bounds__(kTcThreads) tc_backward_dq(BackwardArgs a) {
  constexpr int kBr = kTcBwdRows, kBc = kTcBwdStep<kD>, kN = kD / 8, kS = kBc / 8;
  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sdO = sQ + kBr * kD;
  T* sK = sdO + kBr * kD;     // [2][kBc * kD]
  T* sV = sK + 2 * kBc * kD;  // [2][kBc * kD]
  const uint32_t aQ = smem_addr(sQ), adO = smem_addr(sdO);

  const int tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int bh = int(blockIdx.x % unsigned(a.BH));
  const int qt = a.tiles - 1 - int(blockIdx.x / unsigned(a.BH));
  const int b = bh / a.H, h = bh % a.H;
  const int q0 = qt * kBr, off = a.Tk - a.Tq;
  const T* Kb = a.k.row<T>(b, h, 0);
  const T* Vb = a.v.row<T>(b, h, 0);
  const int kend = kCausal ? min(a.Tk, min(q0 + kBr, a.Tq) + off) : a.Tk;
  const int n_tiles = (kend + kBc - 1) / kBc;

  load_tile_async<kD, kBr, kTcThreads>(sQ, a.q.row<T>(b, h, 0), a.q.st, q0, a.Tq, tid);
  load_tile_async<kD, kBr, kTcThreads>(sdO, a.dout.row<T>(b, h, 0), a.dout.st, q0, a.Tq, tid);
  if (n_tiles > 0) {
    load_tile_async<kD, kBc, kTcThreads>(sK, Kb, a.k.st, 0, a.Tk, tid);
    load_tile_async<kD, kBc, kTcThreads>(sV, Vb, a.v.st, 0, a.Tk, tid);
  }
  cp_async_commit();

  const int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  float L[2], Dl[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool live = rows[r] < a.Tq;
    const float li = live ? a.lse[int64_t(bh) * a.Tq + rows[r]] : INFINITY;
    L[r] = li > -INFINITY ? li * kLog2e : INFINITY;
    Dl[r] = live ? a.delta[int64_t(bh) * a.Tq + rows[r]] : 0.0f;
  }
  float dq[kN][4];
#pragma unroll
  for (int n = 0; n < kN; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;

  for (int j = 0; j < n_tiles; ++j) {
    const int buf = j & 1, j0 = j * kBc;
    cp_async_wait<0>();
    __syncthreads();  // this tile landed; every warp is done with the other buffer
    if (j + 1 < n_tiles) {
      const int nb = buf ^ 1;
      load_tile_async<kD, kBc, kTcThreads>(sK + nb * kBc * kD, Kb, a.k.st, j0 + kBc, a.Tk, tid);
      load_tile_async<kD, kBc, kTcThreads>(sV + nb * kBc * kD, Vb, a.v.st, j0 + kBc, a.Tk, tid);
      cp_async_commit();
    }
    const uint32_t aK = smem_addr(sK + buf * kBc * kD), aV = smem_addr(sV + buf * kBc * kD);

    // S = Q K^T and dP = dO V^T: 16 queries x kBc keys per warp.
    float s[kS][4], dp[kS][4];
    paired_products<T, kD, kS>(aQ, adO, aK, aV, warp * 16, lane, s, dp);

    const bool need_mask = j0 + kBc > a.Tk || (kCausal && j0 + kBc - 1 > q0 + off);
#pragma unroll
    for (int n = 0; n < kS; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = j0 + n * 8 + 2 * t + (e & 1), r = e >> 1;
        float p = fast_exp2(s[n][e] * a.scale_log2 - L[r]);
        if (need_mask && (key >= a.Tk || (kCausal && key > rows[r] + off))) p = 0.0f;
        dp[n][e] = p * (dp[n][e] - Dl[r]);  // dS
      }

      // dQ += dS K (the k dimension is the keys).
#pragma unroll
    for (int kk = 0; kk < kS / 2; ++kk) {
      uint32_t da[4];
      acc_to_a<T>(dp[2 * kk], dp[2 * kk + 1], da);
#pragma unroll
      for (int d2 = 0; d2 < kD / 16; ++d2) {
        uint32_t bf[4];
        load_b_cols<kD>(aK, kk * 16, d2, lane, bf);
        mma16816<T>(dq[2 * d2], da, bf[0], bf[1]);
        mma16816<T>(dq[2 * d2 + 1], da, bf[2], bf[3]);
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] >= a.Tq) continue;
    T* o = a.dq.row<T>(b, h, rows[r]);
#pragma unroll
    for (int n = 0; n < kN; ++n)
      *reinterpret_cast<uint32_t*>(o + n * 8 + 2 * t) =
          pack2<T>(dq[n][2 * r] * a.scale, dq[n][2 * r + 1] * a.scale);
  }
}

}  // namespace keel::kernels::cuda::attn
