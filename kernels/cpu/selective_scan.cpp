// CPU selective scan, forward (kernels/selective_scan.h):
//   x_t = exp(dt_t A) ⊙ x_{t-1} + (dt_t u_t) B_t,   y_t = <C_t, x_t> + D u_t  (· SiLU(z_t))
// One (b, d) row per work item, OpenMP over the B*D rows. The row's state
// (N <= 256 floats) lives on the stack; T is walked in chunks, the chunk's
// step sizes computed first in one vector loop, then per step one loop over
// the N states (contiguous, since B and C are transposed to (B, T, N) once)
// that vectorises: the decay's exp is a polynomial, not libm, and the row
// loop is compiled per ISA (selective_scan_math.h). The state
// entering each chunk is saved for the backward when asked; the (B, D, T, N)
// states are never written.
#include "kernels/selective_scan.h"

#include <algorithm>
#include <cstring>

#include "core/strided.h"
#include "kernels/cpu/selective_scan_math.h"

namespace keel::kernels::cpu {

namespace {

// One call's operands, shared by every row.
struct Fwd {
  int64_t D, T, N, L, nc;
  bool softplus;
  const float *bt, *ct, *u, *delta, *A, *Dp, *z, *bias, *h0;
  float *yp, *lp, *sp;
};

// Row r = (b, d) of the scan; dt: scratch for one chunk's step sizes.
[[gnu::always_inline]] inline void forward_row(const Fwd& f, int64_t r, float* dt) {
  const int64_t D = f.D, T = f.T, N = f.N, L = f.L, nc = f.nc;
  const float *u = f.u, *delta = f.delta, *A = f.A, *Dp = f.Dp, *z = f.z, *bias = f.bias,
              *h0 = f.h0;
  float *yp = f.yp, *lp = f.lp, *sp = f.sp;
  const int64_t b = r / D, d = r % D;
  const float* Ad = A + d * N;
  const float* ur = u + r * T;
  const float Dv = Dp ? Dp[d] : 0.0f, bv = bias ? bias[d] : 0.0f;
  alignas(64) float x[kSelectiveScanMaxN];
  if (h0)
    std::memcpy(x, h0 + r * N, size_t(N) * sizeof(float));
  else
    std::memset(x, 0, size_t(N) * sizeof(float));
  for (int64_t c = 0; c < nc; ++c) {
    const int64_t t0 = c * L, n_t = std::min(L, T - t0);
    if (sp) std::memcpy(sp + (r * nc + c) * N, x, size_t(N) * sizeof(float));
    scan::chunk_dt(delta + r * T + t0, n_t, bv, f.softplus, dt);
    if (yp) {
      float* yr = yp + r * T + t0;
      for (int64_t i = 0; i < n_t; ++i) {
        const float dtv = dt[i], dbu = dtv * ur[t0 + i];
        const float* bb = f.bt + (b * T + t0 + i) * N;
        const float* cc = f.ct + (b * T + t0 + i) * N;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          x[n] = scan::exp_f32(dtv * Ad[n]) * x[n] + dbu * bb[n];
          acc += cc[n] * x[n];
        }
        yr[i] = acc + Dv * ur[t0 + i];
      }
      if (z) {
        const float* zr = z + r * T + t0;
#pragma omp simd
        for (int64_t i = 0; i < n_t; ++i) yr[i] *= zr[i] * scan::sigmoid(zr[i]);
      }
    } else {
      for (int64_t i = 0; i < n_t; ++i) {
        const float dtv = dt[i], dbu = dtv * ur[t0 + i];
        const float* bb = f.bt + (b * T + t0 + i) * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) x[n] = scan::exp_f32(dtv * Ad[n]) * x[n] + dbu * bb[n];
      }
    }
  }
  std::memcpy(lp + r * N, x, size_t(N) * sizeof(float));
}

void forward_row_base(const Fwd& f, int64_t r, float* dt) { forward_row(f, r, dt); }
#ifdef KEEL_SCAN_MULTI_ISA
[[gnu::target("avx2,fma")]] void forward_row_avx2(const Fwd& f, int64_t r, float* dt) {
  forward_row(f, r, dt);
}
[[gnu::target("avx512f,avx2,fma")]] void forward_row_avx512(const Fwd& f, int64_t r, float* dt) {
  forward_row(f, r, dt);
}
#endif

}  // namespace

void selective_scan(const ScanDense& s, Tensor* y, Tensor& last, Tensor* states) {
  const int64_t Bsz = s.batch, D = s.dim, T = s.len, N = s.nstate, L = s.chunk;
  const int64_t nc = s.chunks(), rows = Bsz * D;
  const std::vector<float> bt = scan::to_btn(s.B, Bsz, N, T);  // (B, T, N)
  const std::vector<float> ct =
      y ? scan::to_btn(s.C, Bsz, N, T) : std::vector<float>();  // (B, T, N), for y only
  auto opt = [](const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; };
  const Fwd f{D,
              T,
              N,
              L,
              nc,
              s.softplus,
              bt.data(),
              ct.data(),
              s.u.data<float>(),
              s.delta.data<float>(),
              s.A.data<float>(),
              opt(s.D),
              opt(s.z),
              opt(s.delta_bias),
              opt(s.h0),
              y ? y->data<float>() : nullptr,             // (B, D, T)
              last.data<float>(),                         // (B, D, N)
              states ? states->data<float>() : nullptr};  // (B, D, nc, N)
  void (*row)(const Fwd&, int64_t, float*) = forward_row_base;
#ifdef KEEL_SCAN_MULTI_ISA
  const scan::Isa isa = scan::isa();
  if (isa == scan::Isa::kAvx512)
    row = forward_row_avx512;
  else if (isa == scan::Isa::kAvx2)
    row = forward_row_avx2;
#endif
#pragma omp parallel if (rows > 1 && rows * T * N >= kParallelGrain)
  {
    std::vector<float> dt(size_t(std::min(L, std::max<int64_t>(T, 1))));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) row(f, r, dt.data());
  }
}

}  // namespace keel::kernels::cpu
