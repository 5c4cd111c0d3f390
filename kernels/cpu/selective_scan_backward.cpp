// CPU selective scan, backward. With a_t = exp(dt_t A), h_t = dL/dx_t (the
// total: through y_t and through x_{t+1}) and g_t = dL/dy_t before the gate
// (dy_t · SiLU(z_t)):
//   h_t   = a_{t+1} ⊙ h_{t+1} + g_t C_t         h_{T-1} starts from dlast
//   dB_t += (dt_t u_t) h_t        dC_t += g_t x_t      (summed over channels)
//   du_t  = dt_t <h_t, B_t> + D g_t
//   ddt_t = <h_t ⊙ a_t ⊙ x_{t-1}, A> + u_t <h_t, B_t>,  ddelta = ddt · sigmoid(raw) under softplus
//   dA   += dt_t h_t ⊙ a_t ⊙ x_{t-1},  dD += g_t u_t,  dz_t = dy_t y_t' SiLU'(z_t)
//   dh0   = a_0 ⊙ h_0 (what is left of h after step 0)
// Chunks are walked last to first; inside one, every (b, d) row recomputes
// its chunk's states from the saved state entering the chunk into a
// (chunk + 1, N) scratch, then walks back in t carrying h.
//
// Determinism: dB and dC sum over D. Channels go in fixed groups of
// kGroup; a group's rows add into the group's own (chunk, N) partial in
// channel order, and the partials are summed over groups in group order.
// dA, dD and ddelta_bias sum per (b, d) row over t in f64 (t descending,
// the same for any chunking), then over b in order. None of this depends on
// the thread count or the chunk size, so neither do the bits.
#include <algorithm>
#include <cstring>

#include "core/strided.h"
#include "kernels/cpu/selective_scan_math.h"
#include "kernels/selective_scan.h"

namespace keel::kernels::cpu {

namespace {
constexpr int64_t kGroup = 32;  // channels per dB/dC partial
}

namespace {

// One call's operands and buffers, shared by every work item.
struct Bwd {
  int64_t D, T, N, L, nc, ng, Lb;
  bool softplus;
  const float *bt, *ct, *u, *delta, *A, *Dp, *z, *bias, *gy_p, *sp;
  float *du, *dd, *dz, *h, *partB, *partC;
  double *accA, *accD, *accBias;
};

// Work item `item` = (b, channel group) of chunk c = [t0, t0 + n_t); xs, as,
// dt: this thread's scratch for the chunk's states, decays and step sizes.
[[gnu::always_inline]] inline void backward_item(const Bwd& k, int64_t item, int64_t t0,
                                                 int64_t n_t, int64_t c, float* xs, float* as,
                                                 float* dt) {
  const int64_t D = k.D, T = k.T, N = k.N, nc = k.nc, ng = k.ng, Lb = k.Lb;
  const float *u = k.u, *delta = k.delta, *A = k.A, *Dp = k.Dp, *z = k.z, *bias = k.bias,
              *gy_p = k.gy_p, *sp = k.sp;
  float *du = k.du, *dd = k.dd, *dz = k.dz;
  const int64_t b = item / ng, grp = item % ng;
  float* pb = k.partB + item * Lb * N;
  float* pc = k.partC + item * Lb * N;
  std::memset(pb, 0, size_t(n_t * N) * sizeof(float));
  std::memset(pc, 0, size_t(n_t * N) * sizeof(float));
  for (int64_t d = grp * kGroup; d < std::min(D, (grp + 1) * kGroup); ++d) {
    const int64_t r = b * D + d;
    const float* Ad = A + d * N;
    const float* ur = u + r * T + t0;
    const float* gr = gy_p + r * T + t0;
    const float Dv = Dp ? Dp[d] : 0.0f, bv = bias ? bias[d] : 0.0f;
    // Recompute the chunk's states: xs[i + 1] = x_{t0 + i}, xs[0] the saved one.
    std::memcpy(xs, sp + (r * nc + c) * N, size_t(N) * sizeof(float));
    scan::chunk_dt(delta + r * T + t0, n_t, bv, k.softplus, dt);
    for (int64_t i = 0; i < n_t; ++i) {
      const float dtv = dt[i], dbu = dtv * ur[i];
      const float* bb = k.bt + (b * T + t0 + i) * N;
      const float* xp = xs + i * N;
      float* xn = xs + (i + 1) * N;
      float* ai = as + i * N;
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) {
        ai[n] = scan::exp_f32(dtv * Ad[n]);
        xn[n] = ai[n] * xp[n] + dbu * bb[n];
      }
    }
    // Walk back.
    float* hr = k.h + r * N;
    double* aA = k.accA + r * N;
    // Running sums continue across chunks: the same additions for any chunking.
    double sD = k.accD[r], sBias = k.accBias[r];
    for (int64_t i = n_t - 1; i >= 0; --i) {
      const int64_t t = t0 + i;
      const float dtv = dt[i], uv = ur[i], dbu = dtv * uv;
      const float* bb = k.bt + (b * T + t) * N;
      const float* cc = k.ct + (b * T + t) * N;
      const float* xt = xs + (i + 1) * N;
      const float* xp = xs + i * N;
      const float* ai = as + i * N;
      float gyv = gr[i];
      if (z) {
        float yv = 0.0f;
#pragma omp simd reduction(+ : yv)
        for (int64_t n = 0; n < N; ++n) yv += cc[n] * xt[n];
        yv += Dv * uv;
        const float zv = z[r * T + t], sg = scan::sigmoid(zv);
        dz[r * T + t] = gyv * yv * sg * (1.0f + zv * (1.0f - sg));
        gyv *= zv * sg;
      }
      float* pbi = pb + i * N;
      float* pci = pc + i * N;
      float hb = 0.0f, hxa = 0.0f;
#pragma omp simd reduction(+ : hb, hxa)
      for (int64_t n = 0; n < N; ++n) {
        const float hn = hr[n] + gyv * cc[n];
        pci[n] += gyv * xt[n];
        pbi[n] += dbu * hn;
        hb += hn * bb[n];
        const float q = hn * ai[n] * xp[n];
        hxa += q * Ad[n];
        aA[n] += double(dtv * q);
        hr[n] = hn * ai[n];
      }
      du[r * T + t] = dtv * hb + Dv * gyv;
      float ddt = hxa + uv * hb;
      if (k.softplus) ddt *= scan::sigmoid(delta[r * T + t] + bv);
      dd[r * T + t] = ddt;
      sD += double(gyv * uv);
      sBias += double(ddt);
    }
    k.accD[r] = sD;
    k.accBias[r] = sBias;
  }
}

void backward_item_base(const Bwd& k, int64_t item, int64_t t0, int64_t n_t, int64_t c, float* xs,
                        float* as, float* dt) {
  backward_item(k, item, t0, n_t, c, xs, as, dt);
}
#ifdef KEEL_SCAN_MULTI_ISA
[[gnu::target("avx2,fma")]] void backward_item_avx2(const Bwd& k, int64_t item, int64_t t0,
                                                    int64_t n_t, int64_t c, float* xs, float* as,
                                                    float* dt) {
  backward_item(k, item, t0, n_t, c, xs, as, dt);
}
[[gnu::target("avx512f,avx2,fma")]] void backward_item_avx512(const Bwd& k, int64_t item,
                                                              int64_t t0, int64_t n_t, int64_t c,
                                                              float* xs, float* as, float* dt) {
  backward_item(k, item, t0, n_t, c, xs, as, dt);
}
#endif

}  // namespace

void selective_scan_backward(const ScanDense& s, const Tensor& dy, const Tensor& dlast,
                             const Tensor& states, ScanDenseGrads& g) {
  const int64_t Bsz = s.batch, D = s.dim, T = s.len, N = s.nstate, L = s.chunk;
  const int64_t nc = s.chunks(), rows = Bsz * D, ng = (D + kGroup - 1) / kGroup;
  const int64_t Lb = std::min(L, std::max<int64_t>(T, 1));     // longest chunk
  const std::vector<float> bt = scan::to_btn(s.B, Bsz, N, T);  // (B, T, N)
  const std::vector<float> ct = scan::to_btn(s.C, Bsz, N, T);  // (B, T, N)
  const float* u = s.u.data<float>();
  const float* delta = s.delta.data<float>();
  const float* A = s.A.data<float>();
  const float* Dp = s.D.defined() ? s.D.data<float>() : nullptr;
  const float* z = s.z.defined() ? s.z.data<float>() : nullptr;
  const float* bias = s.delta_bias.defined() ? s.delta_bias.data<float>() : nullptr;
  const float* gy_p = dy.data<float>();          // (B, D, T)
  const float* sp = states.data<float>();        // (B, D, nc, N)
  float* du = g.du.data<float>();                // (B, D, T)
  float* dd = g.ddelta.data<float>();            // (B, D, T)
  float* dz = z ? g.dz.data<float>() : nullptr;  // (B, D, T)
  float* dBp = g.dB.data<float>();               // (B, N, T)
  float* dCp = g.dC.data<float>();               // (B, N, T)

  std::vector<float> h(size_t(rows * N), 0.0f);  // (B, D, N) adjoint state carried back
  if (dlast.defined()) std::memcpy(h.data(), dlast.data<float>(), h.size() * sizeof(float));
  std::vector<double> accA(size_t(rows * N), 0.0);                           // (B, D, N)
  std::vector<double> accD(size_t(rows), 0.0), accBias(size_t(rows), 0.0);   // (B, D)
  std::vector<float> partB(size_t(Bsz * ng * Lb * N)), partC(partB.size());  // (B, ng, L, N)
  const bool par = rows * T * N >= kParallelGrain;
  const Bwd k{D,
              T,
              N,
              L,
              nc,
              ng,
              Lb,
              s.softplus,
              bt.data(),
              ct.data(),
              u,
              delta,
              A,
              Dp,
              z,
              bias,
              gy_p,
              sp,
              du,
              dd,
              dz,
              h.data(),
              partB.data(),
              partC.data(),
              accA.data(),
              accD.data(),
              accBias.data()};
  void (*item_fn)(const Bwd&, int64_t, int64_t, int64_t, int64_t, float*, float*, float*) =
      backward_item_base;
#ifdef KEEL_SCAN_MULTI_ISA
  const scan::Isa isa = scan::isa();
  if (isa == scan::Isa::kAvx512)
    item_fn = backward_item_avx512;
  else if (isa == scan::Isa::kAvx2)
    item_fn = backward_item_avx2;
#endif

#pragma omp parallel if (par)
  {
    std::vector<float> xs(size_t((Lb + 1) * N)), as(size_t(Lb * N)), dt(static_cast<size_t>(Lb));
    for (int64_t c = nc - 1; c >= 0; --c) {
      const int64_t t0 = c * L, n_t = std::min(L, T - t0);
#pragma omp for schedule(static)
      for (int64_t item = 0; item < Bsz * ng; ++item) {
        item_fn(k, item, t0, n_t, c, xs.data(), as.data(), dt.data());
      }
      // Sum this chunk's dB, dC partials over the groups, in group order.
#pragma omp for schedule(static)
      for (int64_t bi = 0; bi < Bsz * n_t; ++bi) {
        const int64_t b = bi / n_t, i = bi % n_t;
        for (int64_t n = 0; n < N; ++n) {
          float sb = 0.0f, sc = 0.0f;
          for (int64_t grp = 0; grp < ng; ++grp) {
            sb += partB[size_t(((b * ng + grp) * Lb + i) * N + n)];
            sc += partC[size_t(((b * ng + grp) * Lb + i) * N + n)];
          }
          dBp[(b * N + n) * T + t0 + i] = sb;
          dCp[(b * N + n) * T + t0 + i] = sc;
        }
      }
    }
  }

  // Parameters: sum over the batch, b in order.
  float* dA = g.dA.data<float>();  // (D, N)
  for (int64_t i = 0; i < D * N; ++i) {
    double sum = 0.0;
    for (int64_t b = 0; b < Bsz; ++b) sum += accA[size_t(b * D * N + i)];
    dA[i] = float(sum);
  }
  for (int64_t d = 0; d < D; ++d) {
    double sd = 0.0, sb = 0.0;
    for (int64_t b = 0; b < Bsz; ++b)
      sd += accD[size_t(b * D + d)], sb += accBias[size_t(b * D + d)];
    if (g.dD.defined()) g.dD.data<float>()[d] = float(sd);
    if (g.ddelta_bias.defined()) g.ddelta_bias.data<float>()[d] = float(sb);
  }
  if (g.dh0.defined()) std::memcpy(g.dh0.data<float>(), h.data(), h.size() * sizeof(float));
}

}  // namespace keel::kernels::cpu
