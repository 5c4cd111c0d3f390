// CUDA selective scan (kernels/selective_scan.h), the CPU path's scheme:
//   x_t = exp(dt_t A) ⊙ x_{t-1} + (dt_t u_t) B_t,   y_t = <C_t, x_t> + D u_t  (· SiLU(z_t))
// Forward: one thread per (b, d) walking T with its N states in registers
// (kN, a compile-time bound >= N, padded with A = 0 and B = C = 0), blocks
// of kThreads channels of one batch row; the block stages B_t and C_t of a
// tile of steps in shared memory, which every channel then reads. The state
// entering each chunk goes to `states` for the backward.
// Backward, one launch per chunk, last chunk first: every thread recomputes
// its chunk's states from the saved one into a device scratch, then walks
// back carrying the adjoint h (device buffer between launches). dB and dC
// sum over channels: each warp (32 consecutive channels, the CPU's group)
// reduces its lanes in a fixed butterfly and writes one partial per
// (group, step, n); a second kernel sums the groups in order. dA, dD and
// ddelta_bias sum per (b, d) in f64 across the launches, then over b in
// order. No atomics, so the results are deterministic.
// This path has not run on a GPU yet; tests/cuda/selective_scan_parity_test.cpp checks it.
#include "kernels/cuda/common.cuh"
#include "kernels/selective_scan.h"
#include "kernels/selective_scan_dense.h"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 128;  // channels per block
constexpr int kGroup = 32;     // channels per dB/dC partial: one warp

struct ScanPtrs {
  const float *u, *delta, *A, *B, *C, *D, *z, *bias, *h0;
  bool softplus;
  int64_t batch, dim, len, nstate, chunk, nc;
};

ScanPtrs ptrs(const ScanDense& s) {
  auto p = [](const Tensor& t) { return t.defined() ? data_ptr<const float>(t) : nullptr; };
  return {p(s.u),  p(s.delta), p(s.A),  p(s.B), p(s.C), p(s.D),   p(s.z),  p(s.delta_bias),
          p(s.h0), s.softplus, s.batch, s.dim,  s.len,  s.nstate, s.chunk, s.chunks()};
}

__device__ __forceinline__ float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float step_dt(const ScanPtrs& p, int64_t r, int64_t d, int64_t t) {
  const float v = p.delta[r * p.len + t] + (p.bias ? p.bias[d] : 0.0f);
  return p.softplus ? softplus_f(v) : v;
}

template <int kN>
constexpr int tile_steps() {
  return 2048 / kN > 1 ? 2048 / kN : 1;  // 16 KiB of B and C per tile
}

template <int kN>
__global__ void __launch_bounds__(kThreads)
    scan_forward(ScanPtrs p, float* y, float* last, float* states) {
  constexpr int kTile = tile_steps<kN>();
  __shared__ float sB[kTile * kN], sC[kTile * kN];
  const int64_t b = blockIdx.y, d = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const bool valid = d < p.dim;
  const int64_t r = b * p.dim + (valid ? d : 0);
  float a[kN], x[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    a[n] = valid && n < p.nstate ? p.A[d * p.nstate + n] : 0.0f;
    x[n] = valid && p.h0 && n < p.nstate ? p.h0[r * p.nstate + n] : 0.0f;
  }
  const float Dv = p.D && valid ? p.D[d] : 0.0f;
  for (int64_t t0 = 0; t0 < p.len; t0 += kTile) {
    const int steps = p.len - t0 < kTile ? int(p.len - t0) : kTile;
    __syncthreads();  // the previous tile is no longer read
    for (int k = threadIdx.x; k < kTile * kN; k += kThreads) {
      const int n = k / kTile, i = k % kTile;  // t fastest: coalesced reads of (B, N, T)
      const bool in = n < p.nstate && i < steps;
      const int64_t src = (b * p.nstate + n) * p.len + t0 + i;
      sB[i * kN + n] = in ? p.B[src] : 0.0f;
      sC[i * kN + n] = in && y ? p.C[src] : 0.0f;
    }
    __syncthreads();
    if (!valid) continue;
    for (int i = 0; i < steps; ++i) {
      const int64_t t = t0 + i;
      if (states && t % p.chunk == 0) {
        float* sp = states + (r * p.nc + t / p.chunk) * p.nstate;
#pragma unroll
        for (int n = 0; n < kN; ++n)
          if (n < p.nstate) sp[n] = x[n];
      }
      const float dtv = step_dt(p, r, d, t), uv = p.u[r * p.len + t], dbu = dtv * uv;
      float acc = 0.0f;
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        x[n] = expf(dtv * a[n]) * x[n] + dbu * sB[i * kN + n];
        acc += sC[i * kN + n] * x[n];
      }
      if (y) {
        float yv = acc + Dv * uv;
        if (p.z) {
          const float zv = p.z[r * p.len + t];
          yv *= zv * sigmoid_f(zv);
        }
        y[r * p.len + t] = yv;
      }
    }
  }
  if (valid)
#pragma unroll
    for (int n = 0; n < kN; ++n)
      if (n < p.nstate) last[r * p.nstate + n] = x[n];
}

struct BackBufs {
  const float *dy, *states;
  float *xs, *h, *partB, *partC;  // scratch (L+1, N, BD), (B, D, N), (B, ng, L, N) x 2
  double *accA, *accD, *accBias;  // (B, D, N), (B, D), (B, D)
  float *du, *ddelta, *dz;        // (B, D, T)
  int64_t lb;                     // steps in the longest chunk (the partials' L)
};

// One chunk [t0, t0 + steps) of the backward for every (b, d).
template <int kN>
__global__ void __launch_bounds__(kThreads)
    scan_backward_chunk(ScanPtrs p, BackBufs q, int64_t c, int64_t t0, int steps) {
  const int64_t b = blockIdx.y, d = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const bool valid = d < p.dim;
  const int64_t r = b * p.dim + (valid ? d : 0), BD = p.batch * p.dim;
  const int64_t N = p.nstate, ng = (p.dim + kGroup - 1) / kGroup, grp = d / kGroup;
  const int lane = threadIdx.x % 32;
  float a[kN], x[kN], h[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    a[n] = valid && n < N ? p.A[d * N + n] : 0.0f;
    x[n] = valid && n < N ? q.states[(r * p.nc + c) * N + n] : 0.0f;
    h[n] = valid && n < N ? q.h[r * N + n] : 0.0f;
  }
  auto xs_at = [&](int i, int n) -> float& { return q.xs[(int64_t(i) * kN + n) * BD + r]; };
  if (valid) {
#pragma unroll
    for (int n = 0; n < kN; ++n) xs_at(0, n) = x[n];
    for (int i = 0; i < steps; ++i) {
      const int64_t t = t0 + i;
      const float dtv = step_dt(p, r, d, t), dbu = dtv * p.u[r * p.len + t];
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        const float bn = n < N ? p.B[(b * N + n) * p.len + t] : 0.0f;
        x[n] = expf(dtv * a[n]) * x[n] + dbu * bn;
        xs_at(i + 1, n) = x[n];
      }
    }
  }
  const float Dv = p.D && valid ? p.D[d] : 0.0f;
  double sD = valid ? q.accD[r] : 0.0, sBias = valid ? q.accBias[r] : 0.0;
  double aA[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) aA[n] = valid && n < N ? q.accA[r * N + n] : 0.0;
  for (int i = steps - 1; i >= 0; --i) {
    const int64_t t = t0 + i;
    float dtv = 0.0f, uv = 0.0f, gy = 0.0f;
    if (valid) {
      dtv = step_dt(p, r, d, t), uv = p.u[r * p.len + t], gy = q.dy[r * p.len + t];
      if (p.z) {
        float yv = Dv * uv;
#pragma unroll
        for (int n = 0; n < kN; ++n)
          if (n < N) yv += p.C[(b * N + n) * p.len + t] * xs_at(i + 1, n);
        const float zv = p.z[r * p.len + t], sg = sigmoid_f(zv);
        q.dz[r * p.len + t] = gy * yv * sg * (1.0f + zv * (1.0f - sg));
        gy *= zv * sg;
      }
    }
    const float dbu = dtv * uv;
    float hb = 0.0f, hxa = 0.0f;
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      if (n >= N) continue;  // uniform across the warp
      const float bn = p.B[(b * N + n) * p.len + t], cn = p.C[(b * N + n) * p.len + t];
      const float xt = valid ? xs_at(i + 1, n) : 0.0f, xp = valid ? xs_at(i, n) : 0.0f;
      const float an = expf(dtv * a[n]);
      const float hn = h[n] + gy * cn;
      const float sb = warp_allreduce(dbu * hn, SumOp{}), sc = warp_allreduce(gy * xt, SumOp{});
      if (lane == n % 32) {
        const int64_t o = ((b * ng + grp) * q.lb + i) * N + n;
        q.partB[o] = sb;
        q.partC[o] = sc;
      }
      hb += hn * bn;
      const float qv = hn * an * xp;
      hxa += qv * a[n];
      aA[n] += double(dtv * qv);
      h[n] = hn * an;
    }
    if (valid) {
      q.du[r * p.len + t] = dtv * hb + Dv * gy;
      float ddt = hxa + uv * hb;
      if (p.softplus) ddt *= sigmoid_f(p.delta[r * p.len + t] + (p.bias ? p.bias[d] : 0.0f));
      q.ddelta[r * p.len + t] = ddt;
      sD += double(gy * uv);
      sBias += double(ddt);
    }
  }
  if (!valid) return;
  q.accD[r] = sD;
  q.accBias[r] = sBias;
#pragma unroll
  for (int n = 0; n < kN; ++n)
    if (n < N) {
      q.accA[r * N + n] = aA[n];
      q.h[r * N + n] = h[n];
    }
}

// dB, dC[b, n, t0 + i] = sum over groups, in order, of the chunk's partials.
__global__ void reduce_groups(const float* partB, const float* partC, int64_t batch, int64_t ng,
                              int64_t L, int64_t N, int64_t T, int64_t t0, int steps, float* dB,
                              float* dC) {
  const int64_t total = batch * N * steps;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k % steps, n = (k / steps) % N, b = k / (steps * N);
    float sb = 0.0f, sc = 0.0f;
    for (int64_t g = 0; g < ng; ++g) {
      sb += partB[((b * ng + g) * L + i) * N + n];
      sc += partC[((b * ng + g) * L + i) * N + n];
    }
    dB[(b * N + n) * T + t0 + i] = sb;
    dC[(b * N + n) * T + t0 + i] = sc;
  }
}

// dA (D, N), dD, ddelta_bias (D): sums over b in order; dh0 the carried adjoint.
__global__ void reduce_params(const double* accA, const double* accD, const double* accBias,
                              int64_t batch, int64_t D, int64_t N, float* dA, float* dD,
                              float* dBias) {
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < D * N;
       k += int64_t(gridDim.x) * blockDim.x) {
    double s = 0.0;
    for (int64_t b = 0; b < batch; ++b) s += accA[b * D * N + k];
    dA[k] = float(s);
    if (k % N == 0) {
      const int64_t d = k / N;
      double sd = 0.0, sb = 0.0;
      for (int64_t b = 0; b < batch; ++b) sd += accD[b * D + d], sb += accBias[b * D + d];
      if (dD) dD[d] = float(sd);
      if (dBias) dBias[d] = float(sb);
    }
  }
}

template <typename F>
void with_kn(int64_t N, F&& f) {
  if (N <= 16)
    f(std::integral_constant<int, 16>{});
  else if (N <= 64)
    f(std::integral_constant<int, 64>{});
  else
    f(std::integral_constant<int, 256>{});
}

}  // namespace

void selective_scan(const ScanDense& s, Tensor* y, Tensor& last, Tensor* states) {
  if (s.batch * s.dim == 0) return;
  const ScanPtrs p = ptrs(s);
  const dim3 grid(unsigned((s.dim + kThreads - 1) / kThreads), unsigned(s.batch));
  with_kn(s.nstate, [&](auto kn) {
    scan_forward<decltype(kn)::value><<<grid, kThreads, 0, stream_of(s.u)>>>(
        p, y ? data_ptr<float>(*y) : nullptr, data_ptr<float>(last),
        states ? data_ptr<float>(*states) : nullptr);
    KEEL_CUDA_CHECK(cudaGetLastError());
  });
}

void selective_scan_backward(const ScanDense& s, const Tensor& dy, const Tensor& dlast,
                             const Tensor& states, ScanDenseGrads& g) {
  const int64_t Bsz = s.batch, D = s.dim, T = s.len, N = s.nstate, L = s.chunk;
  const int64_t BD = Bsz * D, ng = (D + kGroup - 1) / kGroup;
  if (BD == 0) return;
  const Device dev = s.u.device();
  cudaStream_t stream = stream_of(s.u);
  const int64_t Lb = std::min(L, std::max<int64_t>(T, 1));
  Tensor h = dlast.defined() ? dlast.clone() : zeros({Bsz, D, N}, DType::F32, dev);  // (B, D, N)
  // f64 running sums, as raw bytes (keel has no f64 dtype); all-zero bits are 0.0.
  auto f64_zeros = [&](int64_t n) { return zeros({n * 8}, DType::U8, dev); };
  Tensor accA = f64_zeros(BD * N);                          // (B, D, N) f64
  Tensor accD = f64_zeros(BD), accBias = f64_zeros(BD);     // (B, D) f64
  Tensor partB = empty({Bsz, ng, Lb, N}, DType::F32, dev);  // (B, ng, L, N)
  Tensor partC = empty({Bsz, ng, Lb, N}, DType::F32, dev);  // (B, ng, L, N)
  const ScanPtrs p = ptrs(s);
  const dim3 grid(unsigned((D + kThreads - 1) / kThreads), unsigned(Bsz));
  with_kn(N, [&](auto kn) {
    constexpr int kN = decltype(kn)::value;
    Tensor xs = empty({Lb + 1, kN, BD}, DType::F32, dev);  // (L + 1, kN, B*D) recomputed states
    BackBufs q{data_ptr<const float>(dy),
               data_ptr<const float>(states),
               data_ptr<float>(xs),
               data_ptr<float>(h),
               data_ptr<float>(partB),
               data_ptr<float>(partC),
               data_ptr<double>(accA),
               data_ptr<double>(accD),
               data_ptr<double>(accBias),
               data_ptr<float>(g.du),
               data_ptr<float>(g.ddelta),
               g.dz.defined() ? data_ptr<float>(g.dz) : nullptr,
               Lb};
    for (int64_t c = s.chunks() - 1; c >= 0; --c) {
      const int64_t t0 = c * L;
      const int steps = int(std::min(L, T - t0));
      scan_backward_chunk<kN><<<grid, kThreads, 0, stream>>>(p, q, c, t0, steps);
      KEEL_CUDA_CHECK(cudaGetLastError());
      const int64_t total = Bsz * N * steps;
      reduce_groups<<<grid_for(total, 256, dev.index), 256, 0, stream>>>(
          data_ptr<const float>(partB), data_ptr<const float>(partC), Bsz, ng, Lb, N, T, t0, steps,
          data_ptr<float>(g.dB), data_ptr<float>(g.dC));
      KEEL_CUDA_CHECK(cudaGetLastError());
    }
  });
  reduce_params<<<grid_for(D * N, 256, dev.index), 256, 0, stream>>>(
      data_ptr<const double>(accA), data_ptr<const double>(accD), data_ptr<const double>(accBias),
      Bsz, D, N, data_ptr<float>(g.dA), g.dD.defined() ? data_ptr<float>(g.dD) : nullptr,
      g.ddelta_bias.defined() ? data_ptr<float>(g.ddelta_bias) : nullptr);
  KEEL_CUDA_CHECK(cudaGetLastError());
  if (g.dh0.defined()) g.dh0.copy_(h);
}

}  // namespace keel::kernels::cuda
