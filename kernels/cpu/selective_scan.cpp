// CPU selective scan, forward (kernels/selective_scan.h):
//   x_t = exp(dt_t A) ⊙ x_{t-1} + (dt_t u_t) B_t,   y_t = <C_t, x_t> + D u_t  (· SiLU(z_t))
// One (b, d) row per work item, OpenMP over the B*D rows. The row's state
// (N <= 256 floats) lives on the stack; T is walked in chunks, the chunk's
// step sizes computed first in one vector loop, then per step one loop over
// the N states (contiguous, since B and C are transposed to (B, T, N) once)
// that vectorises: the decay's exp is a polynomial, not libm. The state
// entering each chunk is saved for the backward when asked; the (B, D, T, N)
// states are never written.
#include "kernels/selective_scan.h"

#include <algorithm>
#include <cstring>

#include "core/strided.h"
#include "kernels/cpu/selective_scan_math.h"

namespace keel::kernels::cpu {

void selective_scan(const ScanDense& s, Tensor* y, Tensor& last, Tensor* states) {
  const int64_t Bsz = s.batch, D = s.dim, T = s.len, N = s.nstate, L = s.chunk;
  const int64_t nc = s.chunks(), rows = Bsz * D;
  const std::vector<float> bt = scan::to_btn(s.B, Bsz, N, T);  // (B, T, N)
  const std::vector<float> ct =
      y ? scan::to_btn(s.C, Bsz, N, T) : std::vector<float>();  // (B, T, N), for y only
  const float* u = s.u.data<float>();
  const float* delta = s.delta.data<float>();
  const float* A = s.A.data<float>();
  const float* Dp = s.D.defined() ? s.D.data<float>() : nullptr;
  const float* z = s.z.defined() ? s.z.data<float>() : nullptr;
  const float* bias = s.delta_bias.defined() ? s.delta_bias.data<float>() : nullptr;
  const float* h0 = s.h0.defined() ? s.h0.data<float>() : nullptr;
  float* yp = y ? y->data<float>() : nullptr;            // (B, D, T)
  float* lp = last.data<float>();                        // (B, D, N)
  float* sp = states ? states->data<float>() : nullptr;  // (B, D, nc, N)
#pragma omp parallel if (rows > 1 && rows * T * N >= kParallelGrain)
  {
    std::vector<float> dt(size_t(std::min(L, std::max<int64_t>(T, 1))));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
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
        scan::chunk_dt(delta + r * T + t0, n_t, bv, s.softplus, dt.data());
        if (yp) {
          float* yr = yp + r * T + t0;
          for (int64_t i = 0; i < n_t; ++i) {
            const float dtv = dt[size_t(i)], dbu = dtv * ur[t0 + i];
            const float* bb = bt.data() + (b * T + t0 + i) * N;
            const float* cc = ct.data() + (b * T + t0 + i) * N;
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
            const float dtv = dt[size_t(i)], dbu = dtv * ur[t0 + i];
            const float* bb = bt.data() + (b * T + t0 + i) * N;
#pragma omp simd
            for (int64_t n = 0; n < N; ++n) x[n] = scan::exp_f32(dtv * Ad[n]) * x[n] + dbu * bb[n];
          }
        }
      }
      std::memcpy(lp + r * N, x, size_t(N) * sizeof(float));
    }
  }
}

}  // namespace keel::kernels::cpu
