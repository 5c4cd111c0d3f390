// The generic CUDA attention kernels: f32 arithmetic on CUDA cores for what
// the tensor-core kernels do not take (f32 inputs, D not in {64, 128}, D up
// to kGenericMaxD). Operands are read through all four strides, so any view
// works without a copy. Slower, plainly correct, and deterministic: every
// output element is owned by one warp, which adds its terms in a fixed order.
// Included by kernels/cuda/attention.cu only.
//
// Layout: a block of 8 warps. Forward and dQ: a warp owns one query row and
// the block walks 32-key tiles held in shared memory as f32 (lane j scores
// key j; the output dims d = lane + 32u are spread over the lanes). dK/dV:
// a warp owns one key and the block walks 32-query tiles. Shared rows are
// padded to an odd length so that 32 lanes reading 32 different rows at one
// column hit 32 different banks.
#pragma once

#include <cmath>

#include "kernels/cuda/attention_args.cuh"
#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda::attn {

inline constexpr int kGenericMaxD = 256;
inline constexpr int kGenericWarps = 8;
inline constexpr int kGenericThreads = kGenericWarps * 32;
inline constexpr int kGenericTile = 32;
inline constexpr int kGenericPerLane = kGenericMaxD / 32;  // output dims per lane

// Shared row length for D: odd, so that a column walk is conflict-free.
__host__ __device__ inline int generic_ld(int D) { return D | 1; }

// Floats of shared memory: two streamed 32-row tiles and kGenericWarps own rows
// (forward: Q; dQ: Q and dO; dK/dV: K and V, so two sets of own rows).
__host__ __device__ inline int generic_smem_floats(int D) {
  return 2 * kGenericTile * generic_ld(D) + 2 * kGenericWarps * D + 2 * kGenericTile;
}

struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Rows [t0, t0 + kGenericTile) of an operand into f32 shared rows (ld), zeros past T.
template <typename T>
__device__ __forceinline__ void generic_load_tile(float* dst, int ld, const Operand& x, int b,
                                                  int h, int t0, int T_len, int D) {
  for (int idx = int(threadIdx.x); idx < kGenericTile * D; idx += kGenericThreads) {
    const int r = idx / D, d = idx % D;
    float v = 0.0f;
    if (t0 + r < T_len) v = to_f32(x.row<const T>(b, h, t0 + r)[int64_t(d) * x.sd]);
    dst[r * ld + d] = v;
  }
}

// One row (or zeros past T) into f32 shared memory, by one warp.
template <typename T>
__device__ __forceinline__ void generic_load_row(float* dst, const Operand& x, int b, int h, int t,
                                                 int T_len, int D, int lane) {
  for (int d = lane; d < D; d += 32)
    dst[d] = t < T_len ? to_f32(x.row<const T>(b, h, t)[int64_t(d) * x.sd]) : 0.0f;
}

__device__ __forceinline__ float dot_shared(const float* a, const float* b, int D) {
  float s = 0.0f;
  for (int d = 0; d < D; ++d) s = fmaf(a[d], b[d], s);
  return s;
}

// ---- forward ---------------------------------------------------------------------------

template <typename T, bool kAccum>
__global__ void __launch_bounds__(kGenericThreads) generic_forward(ForwardArgs a, bool causal) {
  extern __shared__ float gsm[];
  const int D = a.D, ld = generic_ld(D);
  float* sK = gsm;
  float* sV = sK + kGenericTile * ld;
  float* sQ = sV + kGenericTile * ld;  // [kGenericWarps][D]
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int bh = int(blockIdx.x % unsigned(a.BH));
  const int r0 = (a.q_tiles - 1 - int(blockIdx.x / unsigned(a.BH))) * kGenericWarps;
  const int b = bh / a.H, h = bh % a.H, off = a.Tk - a.Tq;
  const int row = r0 + warp;
  const bool live = row < a.Tq;
  float* q = sQ + warp * D;
  generic_load_row<T>(q, a.q, b, h, row, a.Tq, D, lane);

  float acc[kGenericPerLane];
#pragma unroll
  for (int u = 0; u < kGenericPerLane; ++u) acc[u] = 0.0f;
  float m = -INFINITY, l = 0.0f;  // natural units; l is the whole row's sum (every lane)
  if (kAccum && live) {
    const float lr = a.lse.at(b, h, row);
    if (lr > -INFINITY) {
      m = lr;
      l = 1.0f;
      const float* o = a.out.row<const float>(b, h, row);
#pragma unroll
      for (int u = 0; u < kGenericPerLane; ++u) {
        const int d = lane + 32 * u;
        if (d < D) acc[u] = o[int64_t(d) * a.out.sd];
      }
    }
  }

  const int kend = causal ? min(a.Tk, min(r0 + kGenericWarps, a.Tq) + off) : a.Tk;
  for (int j0 = 0; j0 < kend; j0 += kGenericTile) {
    __syncthreads();  // the previous tile is consumed (and q is written)
    generic_load_tile<T>(sK, ld, a.k, b, h, j0, a.Tk, D);
    generic_load_tile<T>(sV, ld, a.v, b, h, j0, a.Tk, D);
    __syncthreads();
    const int key = j0 + lane;
    const bool vis = live && key < a.Tk && (!causal || key <= row + off);
    const float s = vis ? a.scale * dot_shared(q, sK + lane * ld, D) : -INFINITY;
    const float mx = fmaxf(m, warp_allreduce(s, MaxOp{}));
    if (mx == -INFINITY) continue;     // nothing visible yet (warp-uniform)
    const float alpha = expf(m - mx);  // m = -inf: 0
    const float p = expf(s - mx);      // masked: 0
    l = l * alpha + warp_allreduce(p, SumOp{});
    m = mx;
    const int n = min(kGenericTile, a.Tk - j0);
#pragma unroll
    for (int u = 0; u < kGenericPerLane; ++u) acc[u] *= alpha;
    for (int jj = 0; jj < n; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const float* vr = sV + jj * ld;
#pragma unroll
      for (int u = 0; u < kGenericPerLane; ++u) {
        const int d = lane + 32 * u;
        if (d < D) acc[u] = fmaf(pj, vr[d], acc[u]);
      }
    }
  }
  if (!live) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int u = 0; u < kGenericPerLane; ++u) {
    const int d = lane + 32 * u;
    if (d >= D) continue;
    if constexpr (kAccum)
      a.out.row<float>(b, h, row)[int64_t(d) * a.out.sd] = acc[u] * inv;
    else
      a.out.row<T>(b, h, row)[int64_t(d) * a.out.sd] = from_f32<T>(acc[u] * inv);
  }
  if (lane == 0) a.lse.at(b, h, row) = l > 0.0f ? m + logf(l) : -INFINITY;
}

// ---- backward --------------------------------------------------------------------------

// dK and dV of key rows c0 + warp; the block walks the query tiles that see them.
template <typename T>
__global__ void __launch_bounds__(kGenericThreads)
    generic_backward_dkdv(BackwardArgs a, bool causal) {
  extern __shared__ float gsm[];
  const int D = a.D, ld = generic_ld(D);
  float* sQ = gsm;
  float* sG = sQ + kGenericTile * ld;  // dO tile
  float* sK = sG + kGenericTile * ld;  // [kGenericWarps][D]
  float* sV = sK + kGenericWarps * D;  // [kGenericWarps][D]
  float* sL = sV + kGenericWarps * D;  // [kGenericTile] lse
  float* sDl = sL + kGenericTile;      // [kGenericTile] delta
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int bh = int(blockIdx.x % unsigned(a.BH));
  const int c0 = int(blockIdx.x / unsigned(a.BH)) * kGenericWarps;
  const int b = bh / a.H, h = bh % a.H, off = a.Tk - a.Tq;
  const int key = c0 + warp;
  const bool live = key < a.Tk;
  float* kr = sK + warp * D;
  float* vr = sV + warp * D;
  generic_load_row<T>(kr, a.k, b, h, key, a.Tk, D, lane);
  generic_load_row<T>(vr, a.v, b, h, key, a.Tk, D, lane);
  const float* lse = a.lse + int64_t(bh) * a.Tq;
  const float* delta = a.delta + int64_t(bh) * a.Tq;

  float dk[kGenericPerLane], dv[kGenericPerLane];
#pragma unroll
  for (int u = 0; u < kGenericPerLane; ++u) dk[u] = dv[u] = 0.0f;
  const int first = causal ? max(0, c0 - off) : 0;
  for (int i0 = first; i0 < a.Tq; i0 += kGenericTile) {
    __syncthreads();
    generic_load_tile<T>(sQ, ld, a.q, b, h, i0, a.Tq, D);
    generic_load_tile<T>(sG, ld, a.dout, b, h, i0, a.Tq, D);
    if (threadIdx.x < kGenericTile) {
      const int i = i0 + int(threadIdx.x);
      sL[threadIdx.x] = i < a.Tq ? lse[i] : INFINITY;
      sDl[threadIdx.x] = i < a.Tq ? delta[i] : 0.0f;
    }
    __syncthreads();
    const int i = i0 + lane;
    const bool vis = live && i < a.Tq && (!causal || key <= i + off) && sL[lane] > -INFINITY;
    float p = 0.0f, ds = 0.0f;
    if (vis) {
      p = expf(a.scale * dot_shared(sQ + lane * ld, kr, D) - sL[lane]);
      ds = p * (dot_shared(sG + lane * ld, vr, D) - sDl[lane]);
    }
    const int n = min(kGenericTile, a.Tq - i0);
    for (int ii = 0; ii < n; ++ii) {
      const float pi = __shfl_sync(0xffffffffu, p, ii);
      const float dsi = __shfl_sync(0xffffffffu, ds, ii);
      const float* qr = sQ + ii * ld;
      const float* gr = sG + ii * ld;
#pragma unroll
      for (int u = 0; u < kGenericPerLane; ++u) {
        const int d = lane + 32 * u;
        if (d < D) {
          dv[u] = fmaf(pi, gr[d], dv[u]);
          dk[u] = fmaf(dsi, qr[d], dk[u]);
        }
      }
    }
  }
  if (!live) return;
#pragma unroll
  for (int u = 0; u < kGenericPerLane; ++u) {
    const int d = lane + 32 * u;
    if (d >= D) continue;
    a.dk.row<T>(b, h, key)[d] = from_f32<T>(dk[u] * a.scale);
    a.dv.row<T>(b, h, key)[d] = from_f32<T>(dv[u]);
  }
}

// dQ of query row r0 + warp; the block walks the key tiles its rows see.
template <typename T>
__global__ void __launch_bounds__(kGenericThreads)
    generic_backward_dq(BackwardArgs a, bool causal) {
  extern __shared__ float gsm[];
  const int D = a.D, ld = generic_ld(D);
  float* sK = gsm;
  float* sV = sK + kGenericTile * ld;
  float* sQ = sV + kGenericTile * ld;  // [kGenericWarps][D]
  float* sG = sQ + kGenericWarps * D;  // [kGenericWarps][D]
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int bh = int(blockIdx.x % unsigned(a.BH));
  const int r0 = (a.tiles - 1 - int(blockIdx.x / unsigned(a.BH))) * kGenericWarps;
  const int b = bh / a.H, h = bh % a.H, off = a.Tk - a.Tq;
  const int row = r0 + warp;
  const bool live = row < a.Tq;
  float* q = sQ + warp * D;
  float* go = sG + warp * D;
  generic_load_row<T>(q, a.q, b, h, row, a.Tq, D, lane);
  generic_load_row<T>(go, a.dout, b, h, row, a.Tq, D, lane);
  const float L = live ? a.lse[int64_t(bh) * a.Tq + row] : INFINITY;
  const float Dl = live ? a.delta[int64_t(bh) * a.Tq + row] : 0.0f;

  float dq[kGenericPerLane];
#pragma unroll
  for (int u = 0; u < kGenericPerLane; ++u) dq[u] = 0.0f;
  const int kend = causal ? min(a.Tk, min(r0 + kGenericWarps, a.Tq) + off) : a.Tk;
  for (int j0 = 0; j0 < kend; j0 += kGenericTile) {
    __syncthreads();
    generic_load_tile<T>(sK, ld, a.k, b, h, j0, a.Tk, D);
    generic_load_tile<T>(sV, ld, a.v, b, h, j0, a.Tk, D);
    __syncthreads();
    const int key = j0 + lane;
    const bool vis = live && key < a.Tk && (!causal || key <= row + off) && L > -INFINITY;
    float ds = 0.0f;
    if (vis) {
      const float p = expf(a.scale * dot_shared(q, sK + lane * ld, D) - L);
      ds = p * (dot_shared(go, sV + lane * ld, D) - Dl);
    }
    const int n = min(kGenericTile, a.Tk - j0);
    for (int jj = 0; jj < n; ++jj) {
      const float dsj = __shfl_sync(0xffffffffu, ds, jj);
      const float* kr = sK + jj * ld;
#pragma unroll
      for (int u = 0; u < kGenericPerLane; ++u) {
        const int d = lane + 32 * u;
        if (d < D) dq[u] = fmaf(dsj, kr[d], dq[u]);
      }
    }
  }
  if (!live) return;
#pragma unroll
  for (int u = 0; u < kGenericPerLane; ++u) {
    const int d = lane + 32 * u;
    if (d < D) a.dq.row<T>(b, h, row)[d] = from_f32<T>(dq[u] * a.scale);
  }
}

}  // namespace keel::kernels::cuda::attn
