// Stockham autosort FFT (decimation in frequency): each stage reads x and
// writes y in natural order for the next stage, so no bit reversal pass is
// needed. A stage of current length l and stride s does, for p < l/r and
// q < s, an r-point butterfly on x[q + s*(p + i*l/r)] and writes
// y[q + s*(r*p + j)] times the twiddle W_l^(j*p). The q loop is contiguous
// and vectorises once s is large; for the first stages (s small) the p loop
// is innermost instead.
#include "kernels/cpu/fft.h"

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <numbers>
#include <utility>
#include <vector>

#include "core/error.h"

namespace keel::kernels::fft {
namespace {

struct Stage {
  int64_t len;    // current sub-transform length l
  int64_t radix;  // 2 or 4
  // twiddles W_l^(j*p) for j = 1..radix-1, p < l/radix: w[(j-1)*(l/radix) + p]
  std::vector<float> wr, wi;
};

struct Plan {
  int64_t n = 0;
  std::vector<Stage> stages;
  // for real transforms of size 2n: W_{2n}^k, k <= n
  std::vector<float> rr, ri;
};

bool is_pow2(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

std::unique_ptr<Plan> make_plan(int64_t n) {
  auto plan = std::make_unique<Plan>();
  plan->n = n;
  int64_t log2n = 0;
  while ((int64_t(1) << log2n) < n) ++log2n;
  int64_t l = n;
  bool radix2_first = (log2n % 2) == 1;
  while (l > 1) {
    Stage st;
    st.len = l;
    st.radix = radix2_first ? 2 : 4;
    radix2_first = false;
    const int64_t m = l / st.radix;
    st.wr.resize(size_t((st.radix - 1) * m));
    st.wi.resize(size_t((st.radix - 1) * m));
    for (int64_t j = 1; j < st.radix; ++j)
      for (int64_t p = 0; p < m; ++p) {
        // (j*p) mod l keeps the angle small for accuracy
        const double a = -2.0 * std::numbers::pi * double((j * p) % l) / double(l);
        st.wr[size_t((j - 1) * m + p)] = float(std::cos(a));
        st.wi[size_t((j - 1) * m + p)] = float(std::sin(a));
      }
    l = m;
    plan->stages.push_back(std::move(st));
  }
  plan->rr.resize(size_t(n + 1));
  plan->ri.resize(size_t(n + 1));
  for (int64_t k = 0; k <= n; ++k) {
    const double a = -std::numbers::pi * double(k) / double(n);
    plan->rr[size_t(k)] = float(std::cos(a));
    plan->ri[size_t(k)] = float(std::sin(a));
  }
  return plan;
}

// Plans are never freed, so references stay valid after the lock drops.
const Plan& get_plan(int64_t n) {
  static std::mutex mu;
  static std::map<int64_t, std::unique_ptr<Plan>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[n];
  if (!slot) slot = make_plan(n);
  return *slot;
}

void check_size(int64_t n, const char* what) {
  KEEL_CHECK(is_pow2(n) && n <= kMaxSize, "fft::", what, ": size ", n,
             " must be a power of two in [1, ", kMaxSize, "]");
}

// Forward radix-2 stage (only the sign convention of W differs for inverse,
// which is handled by swapping re and im around the forward transform).
void radix2(const Stage& st, int64_t s, const float* xr, const float* xi, float* yr, float* yi) {
  const int64_t m = st.len / 2;
  const float* wr = st.wr.data();
  const float* wi = st.wi.data();
  for (int64_t p = 0; p < m; ++p) {
    const float w_r = wr[p], w_i = wi[p];
    const float* ar = xr + s * p;
    const float* ai = xi + s * p;
    const float* br = xr + s * (p + m);
    const float* bi = xi + s * (p + m);
    float* y0r = yr + s * (2 * p);
    float* y0i = yi + s * (2 * p);
    float* y1r = yr + s * (2 * p + 1);
    float* y1i = yi + s * (2 * p + 1);
#pragma omp simd
    for (int64_t q = 0; q < s; ++q) {
      const float dr = ar[q] - br[q], di = ai[q] - bi[q];
      y0r[q] = ar[q] + br[q];
      y0i[q] = ai[q] + bi[q];
      y1r[q] = dr * w_r - di * w_i;
      y1i[q] = dr * w_i + di * w_r;
    }
  }
}

inline void bfly4(float ar, float ai, float br, float bi, float cr, float ci, float dr, float di,
                  float w1r, float w1i, float w2r, float w2i, float w3r, float w3i, float* o0r,
                  float* o0i, float* o1r, float* o1i, float* o2r, float* o2i, float* o3r,
                  float* o3i) {
  const float apcr = ar + cr, apci = ai + ci;
  const float amcr = ar - cr, amci = ai - ci;
  const float bpdr = br + dr, bpdi = bi + di;
  // -i * (b - d)
  const float mjr = bi - di, mji = dr - br;
  *o0r = apcr + bpdr;
  *o0i = apci + bpdi;
  const float t1r = amcr + mjr, t1i = amci + mji;
  const float t2r = apcr - bpdr, t2i = apci - bpdi;
  const float t3r = amcr - mjr, t3i = amci - mji;
  *o1r = t1r * w1r - t1i * w1i;
  *o1i = t1r * w1i + t1i * w1r;
  *o2r = t2r * w2r - t2i * w2i;
  *o2i = t2r * w2i + t2i * w2r;
  *o3r = t3r * w3r - t3i * w3i;
  *o3i = t3r * w3i + t3i * w3r;
}

void radix4(const Stage& st, int64_t s, const float* xr, const float* xi, float* yr, float* yi) {
  const int64_t m = st.len / 4;
  const float* w1r = st.wr.data();
  const float* w1i = st.wi.data();
  const float* w2r = w1r + m;
  const float* w2i = w1i + m;
  const float* w3r = w2r + m;
  const float* w3i = w2i + m;
  if (s == 1) {
    // First stage: vectorise over p (contiguous reads, stride-4 writes).
#pragma omp simd
    for (int64_t p = 0; p < m; ++p)
      bfly4(xr[p], xi[p], xr[p + m], xi[p + m], xr[p + 2 * m], xi[p + 2 * m], xr[p + 3 * m],
            xi[p + 3 * m], w1r[p], w1i[p], w2r[p], w2i[p], w3r[p], w3i[p], &yr[4 * p], &yi[4 * p],
            &yr[4 * p + 1], &yi[4 * p + 1], &yr[4 * p + 2], &yi[4 * p + 2], &yr[4 * p + 3],
            &yi[4 * p + 3]);
    return;
  }
  for (int64_t p = 0; p < m; ++p) {
    const float a1r = w1r[p], a1i = w1i[p], a2r = w2r[p], a2i = w2i[p], a3r = w3r[p], a3i = w3i[p];
    const int64_t i0 = s * p, i1 = s * (p + m), i2 = s * (p + 2 * m), i3 = s * (p + 3 * m);
    const int64_t o = s * 4 * p;
#pragma omp simd
    for (int64_t q = 0; q < s; ++q)
      bfly4(xr[i0 + q], xi[i0 + q], xr[i1 + q], xi[i1 + q], xr[i2 + q], xi[i2 + q], xr[i3 + q],
            xi[i3 + q], a1r, a1i, a2r, a2i, a3r, a3i, &yr[o + q], &yi[o + q], &yr[o + s + q],
            &yi[o + s + q], &yr[o + 2 * s + q], &yi[o + 2 * s + q], &yr[o + 3 * s + q],
            &yi[o + 3 * s + q]);
  }
}

// Forward unnormalised transform in place, using a per-thread scratch.
// Cloned for AVX2 + FMA (picked at load time on CPUs that have them), with
// the butterflies inlined into each clone.
[[gnu::target_clones("arch=x86-64-v3", "default"), gnu::flatten]] void forward(const Plan& plan,
                                                                               float* re,
                                                                               float* im) {
  const int64_t n = plan.n;
  if (n == 1) return;
  thread_local std::vector<float> scratch;
  if (scratch.size() < size_t(2 * n)) scratch.resize(size_t(2 * n));
  float* xr = re;
  float* xi = im;
  float* yr = scratch.data();
  float* yi = scratch.data() + n;
  int64_t s = 1;
  for (const Stage& st : plan.stages) {
    if (st.radix == 4)
      radix4(st, s, xr, xi, yr, yi);
    else
      radix2(st, s, xr, xi, yr, yi);
    s *= st.radix;
    std::swap(xr, yr);
    std::swap(xi, yi);
  }
  if (xr != re) {
    for (int64_t i = 0; i < n; ++i) re[i] = xr[i];
    for (int64_t i = 0; i < n; ++i) im[i] = xi[i];
  }
}

}  // namespace

void c2c(int64_t n, float* re, float* im, bool inverse) {
  check_size(n, "c2c");
  const Plan& plan = get_plan(n);
  // conj(F(conj x)) == swap(F(swap x)): swapping re and im turns the forward
  // transform into the inverse one with no separate code path.
  if (inverse)
    forward(plan, im, re);
  else
    forward(plan, re, im);
}

void r2c(int64_t n, const float* x, float* re, float* im) {
  check_size(n, "r2c");
  if (n == 1) {
    re[0] = x[0];
    im[0] = 0.f;
    return;
  }
  const int64_t h = n / 2;
  const Plan& half = get_plan(h);
  // z[k] = x[2k] + i x[2k+1]; Z = F_h(z) written into re/im[0..h).
  for (int64_t k = 0; k < h; ++k) {
    re[k] = x[2 * k];
    im[k] = x[2 * k + 1];
  }
  forward(half, re, im);
  // X[k] = E[k] + W_n^k O[k], E = (Z[k] + conj Z[h-k]) / 2,
  // O = (Z[k] - conj Z[h-k]) / 2i, for k and h-k together (in place).
  const float* wr = half.rr.data();
  const float* wi = half.ri.data();
  const float z0r = re[0], z0i = im[0];
  re[0] = z0r + z0i;
  im[0] = 0.f;
  re[h] = z0r - z0i;
  im[h] = 0.f;
  for (int64_t k = 1; k <= h / 2; ++k) {
    const int64_t j = h - k;
    const float akr = re[k], aki = im[k], ajr = re[j], aji = im[j];
    // for bin k
    const float ekr = 0.5f * (akr + ajr), eki = 0.5f * (aki - aji);
    const float okr = 0.5f * (aki + aji), oki = -0.5f * (akr - ajr);
    // for bin j: E[j] = conj E[k], O[j] = conj O[k]
    const float tkr = wr[k] * okr - wi[k] * oki, tki = wr[k] * oki + wi[k] * okr;
    const float tjr = wr[j] * okr + wi[j] * oki, tji = wr[j] * (-oki) + wi[j] * okr;
    re[k] = ekr + tkr;
    im[k] = eki + tki;
    re[j] = ekr + tjr;
    im[j] = -eki + tji;
  }
}

void c2r(int64_t n, const float* re, const float* im, float* x) {
  check_size(n, "c2r");
  if (n == 1) {
    x[0] = re[0];
    return;
  }
  const int64_t h = n / 2;
  const Plan& half = get_plan(h);
  thread_local std::vector<float> buf;
  if (buf.size() < size_t(2 * h)) buf.resize(size_t(2 * h));
  float* zr = buf.data();
  float* zi = buf.data() + h;
  // Z[k] = E[k] + i O[k], E = (X[k] + conj X[h-k]) / 2, O = W^-k (X[k] - conj X[h-k]) / 2.
  const float* wr = half.rr.data();
  const float* wi = half.ri.data();
  for (int64_t k = 0; k < h; ++k) {
    const int64_t j = h - k;
    const float xkr = re[k], xki = k == 0 ? 0.f : im[k];
    const float xjr = re[j], xji = j == h ? 0.f : im[j];
    const float er = 0.5f * (xkr + xjr), ei = 0.5f * (xki - xji);
    const float dr = 0.5f * (xkr - xjr), di = 0.5f * (xki + xji);
    // O = conj(W^k) * d
    const float or_ = wr[k] * dr + wi[k] * di, oi = wr[k] * di - wi[k] * dr;
    zr[k] = er - oi;
    zi[k] = ei + or_;
  }
  // inverse F_h by the swap trick
  forward(half, zi, zr);
  const float scale = 1.0f / float(h);
  for (int64_t k = 0; k < h; ++k) {
    x[2 * k] = zr[k] * scale;
    x[2 * k + 1] = zi[k] * scale;
  }
}

}  // namespace keel::kernels::fft
