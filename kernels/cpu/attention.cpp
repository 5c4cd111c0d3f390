// CPU attention: FlashAttention's blocked algorithm with the block products
// on OpenBLAS (single-threaded inside our OpenMP regions) and the softmax in
// vectorizable loops. Operands are read through their strides; a block that
// is not already f32 rows with unit D stride is packed into thread-local f32
// scratch, which also converts bf16/f16.
#include "kernels/attention.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/scalar_cast.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/dispatch.h"

namespace keel::kernels {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// libm-free exp for the softmax loops (arguments are scores minus a max).
using cpu::exp_nonpositive;

// One (B, H, T, D) operand: element pointer and strides.
template <typename T>
struct Operand {
  const T* base;
  int64_t sb, sh, st, sd;
  explicit Operand(const Tensor& t)
      : base(static_cast<const T*>(t.raw_data())),
        sb(t.stride(0)),
        sh(t.stride(1)),
        st(t.stride(2)),
        sd(t.stride(3)) {}
  const T* row(int64_t b, int64_t h, int64_t t) const { return base + b * sb + h * sh + t * st; }
};

// Rows [t0, t0 + n) of (b, h) as an f32 row-major matrix: the operand's own
// memory when it already is one (BLAS needs ld >= D), else packed into
// `scratch` (n x D). *ld receives the row stride.
template <typename T>
const float* rows_f32(const Operand<T>& a, int64_t b, int64_t h, int64_t t0, int64_t n, int64_t D,
                      float* scratch, int64_t* ld) {
  if constexpr (std::is_same_v<T, float>) {
    if (a.sd == 1 && (a.st >= D || n == 1)) {
      *ld = n == 1 ? D : a.st;
      return a.row(b, h, t0);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const T* src = a.row(b, h, t0 + i);
    float* dst = scratch + i * D;
    if (a.sd == 1) {
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) dst[d] = load_f32(src[d]);
    } else {
      for (int64_t d = 0; d < D; ++d) dst[d] = load_f32(src[d * a.sd]);
    }
  }
  *ld = D;
  return scratch;
}

// S = scale * Q K^T for an (ni x nj) block, written densely (ld nj).
inline void scores(int64_t ni, int64_t nj, int64_t D, float scale, const float* q, int64_t ldq,
                   const float* k, int64_t ldk, float* s) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(ni), int(nj), int(D), scale, q, int(ldq),
              k, int(ldk), 0.0f, s, int(nj));
}

// Causal mask on a dense (ni x nj) block: row i sees local keys j <= i + diag.
inline void mask_block(float* s, int64_t ni, int64_t nj, int64_t diag) {
  for (int64_t i = 0; i < ni; ++i) {
    float* si = s + i * nj;
    for (int64_t j = std::max<int64_t>(0, i + diag + 1); j < nj; ++j) si[j] = kNegInf;
  }
}

// ---------------------------------------------------------------- forward

template <typename T>
void forward_impl(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, float scale,
                  AttentionBlocks blk, Tensor& out, Tensor& lse) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  if (B * H * Tq == 0) return;
  const int64_t off = Tk - Tq;  // query i sits at key position i + off
  const int64_t bq = std::min(blk.q, Tq), bk = std::min(blk.k, Tk);
  const int64_t nqb = (Tq + bq - 1) / bq;
  const Operand<T> Q(q), K(k), V(v);
  T* O = out.data<T>();          // contiguous (B, H, Tq, D)
  float* L = lse.data<float>();  // contiguous (B, H, Tq)
  const int64_t items = B * H * nqb;

#pragma omp parallel if (items > 1)
  {
    std::vector<float> qbuf(size_t(bq * D)), kbuf(size_t(bk * D)), vbuf(size_t(bk * D));
    std::vector<float> s(size_t(bq * bk)), acc(size_t(bq * D)), m(static_cast<size_t>(bq)),
        l(static_cast<size_t>(bq));
    // Causal blocks near the diagonal are cheap, far ones expensive: hand
    // out items one at a time.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t bh = item / nqb, b = bh / H, h = bh % H;
      const int64_t i0 = (item % nqb) * bq, ni = std::min(bq, Tq - i0);
      int64_t ldq, ldk, ldv;
      const float* qp = rows_f32(Q, b, h, i0, ni, D, qbuf.data(), &ldq);
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(m.begin(), m.end(), kNegInf);
      std::fill(l.begin(), l.end(), 0.0f);
      // Keys after the block's last visible one are masked for every row.
      const int64_t kend = causal ? std::min(Tk, i0 + ni + off) : Tk;
      for (int64_t j0 = 0; j0 < kend; j0 += bk) {
        const int64_t nj = std::min(bk, kend - j0);
        const float* kp = rows_f32(K, b, h, j0, nj, D, kbuf.data(), &ldk);
        const float* vp = rows_f32(V, b, h, j0, nj, D, vbuf.data(), &ldv);
        scores(ni, nj, D, scale, qp, ldq, kp, ldk, s.data());
        const int64_t diag = i0 + off - j0;
        if (causal && nj - 1 > diag) mask_block(s.data(), ni, nj, diag);
        // Online softmax: rescale what was accumulated under the old row max.
        // Key 0 is visible to every row, so m is finite after the first block.
        for (int64_t i = 0; i < ni; ++i) {
          float* si = s.data() + i * nj;
          float mx = m[size_t(i)];
#pragma omp simd reduction(max : mx)
          for (int64_t j = 0; j < nj; ++j) mx = std::max(mx, si[j]);
          const float alpha = exp_nonpositive(m[size_t(i)] - mx);
          float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < nj; ++j) {
            float p = exp_nonpositive(si[j] - mx);
            si[j] = p;
            sum += p;
          }
          l[size_t(i)] = l[size_t(i)] * alpha + sum;
          m[size_t(i)] = mx;
          if (alpha != 1.0f) {
            float* ai = acc.data() + i * D;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) ai[d] *= alpha;
          }
        }
        // acc += P V
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(ni), int(D), int(nj), 1.0f,
                    s.data(), int(nj), vp, int(ldv), 1.0f, acc.data(), int(D));
      }
      for (int64_t i = 0; i < ni; ++i) {
        const float inv = 1.0f / l[size_t(i)];
        const float* ai = acc.data() + i * D;
        T* oi = O + (bh * Tq + i0 + i) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) oi[d] = store_f32<T>(ai[d] * inv);
        L[bh * Tq + i0 + i] = m[size_t(i)] + std::log(l[size_t(i)]);
      }
    }
  }
}

// ---------------------------------------------------------------- backward

// Per-thread scratch for the backward.
struct BackwardScratch {
  std::vector<float> q, dout, k, v, p, dp;
  BackwardScratch(int64_t bq, int64_t bk, int64_t D)
      : q(size_t(bq * D)),
        dout(size_t(bq * D)),
        k(size_t(bk * D)),
        v(size_t(bk * D)),
        p(size_t(bq * bk)),
        dp(size_t(bq * bk)) {}
};

template <typename T>
class Backward {
 public:
  Backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& dout,
           const Tensor& lse, const Tensor& dlse, bool causal, float scale, AttentionBlocks blk,
           Tensor& dq, Tensor& dk, Tensor& dv)
      : Q_(q),
        K_(k),
        V_(v),
        O_(out),
        dO_(dout),
        BH_(q.size(0) * q.size(1)),
        H_(q.size(1)),
        Tq_(q.size(2)),
        Tk_(k.size(2)),
        D_(q.size(3)),
        off_(Tk_ - Tq_),
        bq_(std::max<int64_t>(1, std::min(blk.q, Tq_))),
        bk_(std::max<int64_t>(1, std::min(blk.k, Tk_))),
        causal_(causal),
        scale_(scale),
        lse_(lse.data<float>()),
        dlse_(dlse.defined() ? dlse.data<float>() : nullptr),
        dq_(dq.data<float>()),
        dk_(dk.data<float>()),
        dv_(dv.data<float>()),
        di_(size_t(BH_ * Tq_)) {}

  void run() {
    const int64_t BH = BH_;
    if (BH * Tq_ == 0 || Tk_ == 0) return;
    compute_di();
    const int64_t nqb = (Tq_ + bq_ - 1) / bq_, nkb = (Tk_ + bk_ - 1) / bk_;
    // One pass per (b, h) owns all of that head's dq, dk and dv (no races),
    // but leaves threads idle when there are few heads. The split form runs
    // one pass over (b, h, key block) for dk, dv and one over (b, h, query
    // block) for dq, recomputing the scores: 7 block products per block pair
    // instead of 5. Take the fused pass when it keeps >= 5/7 of threads busy.
    const int64_t threads = omp_get_max_threads();
    const int64_t rounds = (BH + threads - 1) / threads;
    const bool fused = 7 * BH >= 5 * threads * rounds;
    if (fused) {
#pragma omp parallel if (BH > 1)
      {
        BackwardScratch w(bq_, bk_, D_);
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; ++bh)
          for (int64_t kb = 0; kb < nkb; ++kb) key_block(w, bh, kb * bk_, true);
      }
    } else {
#pragma omp parallel
      {
        BackwardScratch w(bq_, bk_, D_);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < BH * nkb; ++item)
          key_block(w, item / nkb, (item % nkb) * bk_, false);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < BH * nqb; ++item)
          query_block(w, item / nqb, (item % nqb) * bq_);
      }
    }
  }

 private:
  // di = rowsum(dout * out) - dlse: the softmax backward's row term, where
  // dlse is the gradient reaching lse directly.
  void compute_di() {
    const int64_t rows = int64_t(di_.size());
#pragma omp parallel for schedule(static) if (rows * D_ >= 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t bh = r / Tq_, i = r % Tq_, b = bh / H_, h = bh % H_;
      const T* o = O_.row(b, h, i);
      const T* g = dO_.row(b, h, i);
      float acc = 0.0f;
      for (int64_t d = 0; d < D_; ++d) acc += load_f32(o[d * O_.sd]) * load_f32(g[d * dO_.sd]);
      di_[size_t(r)] = acc - (dlse_ ? dlse_[r] : 0.0f);
    }
  }

  // Gradients of one (query block, key block) pair given both blocks as f32
  // rows. dq_blk/dk_blk/dv_blk (dense, ld D) are accumulated into when non-null.
  void pair(BackwardScratch& w, int64_t bh, int64_t i0, int64_t ni, int64_t j0, int64_t nj,
            const float* qp, int64_t ldq, const float* gp, int64_t ldg, const float* kp,
            int64_t ldk, const float* vp, int64_t ldv, float* dq_blk, float* dk_blk,
            float* dv_blk) {
    float* p = w.p.data();
    float* dp = w.dp.data();
    scores(ni, nj, D_, scale_, qp, ldq, kp, ldk, p);
    const int64_t diag = i0 + off_ - j0;
    if (causal_ && nj - 1 > diag) mask_block(p, ni, nj, diag);
    const float* lse = lse_ + bh * Tq_ + i0;
    for (int64_t i = 0; i < ni; ++i) {
      float* pi = p + i * nj;
      const float li = lse[i];
#pragma omp simd
      for (int64_t j = 0; j < nj; ++j) pi[j] = exp_nonpositive(pi[j] - li);
    }
    // dv += P^T dout
    if (dv_blk)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(nj), int(D_), int(ni), 1.0f, p,
                  int(nj), gp, int(ldg), 1.0f, dv_blk, int(D_));
    // dP = dout V^T, then dS = P * (dP - di) in place
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(ni), int(nj), int(D_), 1.0f, gp,
                int(ldg), vp, int(ldv), 0.0f, dp, int(nj));
    const float* di = di_.data() + bh * Tq_ + i0;
    for (int64_t i = 0; i < ni; ++i) {
      const float* pi = p + i * nj;
      float* dpi = dp + i * nj;
      const float dii = di[i];
#pragma omp simd
      for (int64_t j = 0; j < nj; ++j) dpi[j] = pi[j] * (dpi[j] - dii);
    }
    // dk += scale * dS^T Q;  dq += scale * dS K
    if (dk_blk)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(nj), int(D_), int(ni), scale_, dp,
                  int(nj), qp, int(ldq), 1.0f, dk_blk, int(D_));
    if (dq_blk)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(ni), int(D_), int(nj), scale_, dp,
                  int(nj), kp, int(ldk), 1.0f, dq_blk, int(D_));
  }

  // All query blocks against key block [j0, j0 + bk): dk and dv of that
  // block, and dq too when this thread owns the whole head.
  void key_block(BackwardScratch& w, int64_t bh, int64_t j0, bool with_dq) {
    const int64_t b = bh / H_, h = bh % H_, nj = std::min(bk_, Tk_ - j0);
    int64_t ldk, ldv, ldq, ldg;
    const float* kp = rows_f32(K_, b, h, j0, nj, D_, w.k.data(), &ldk);
    const float* vp = rows_f32(V_, b, h, j0, nj, D_, w.v.data(), &ldv);
    float* dk = dk_ + (bh * Tk_ + j0) * D_;
    float* dv = dv_ + (bh * Tk_ + j0) * D_;
    // Query rows before j0 - off cannot see this block.
    const int64_t first = causal_ ? std::max<int64_t>(0, j0 - off_) / bq_ * bq_ : 0;
    for (int64_t i0 = first; i0 < Tq_; i0 += bq_) {
      const int64_t ni = std::min(bq_, Tq_ - i0);
      const float* qp = rows_f32(Q_, b, h, i0, ni, D_, w.q.data(), &ldq);
      const float* gp = rows_f32(dO_, b, h, i0, ni, D_, w.dout.data(), &ldg);
      float* dq = with_dq ? dq_ + (bh * Tq_ + i0) * D_ : nullptr;
      pair(w, bh, i0, ni, j0, nj, qp, ldq, gp, ldg, kp, ldk, vp, ldv, dq, dk, dv);
    }
  }

  // dq of query block [i0, i0 + bq) against every key block it sees.
  void query_block(BackwardScratch& w, int64_t bh, int64_t i0) {
    const int64_t b = bh / H_, h = bh % H_, ni = std::min(bq_, Tq_ - i0);
    int64_t ldk, ldv, ldq, ldg;
    const float* qp = rows_f32(Q_, b, h, i0, ni, D_, w.q.data(), &ldq);
    const float* gp = rows_f32(dO_, b, h, i0, ni, D_, w.dout.data(), &ldg);
    float* dq = dq_ + (bh * Tq_ + i0) * D_;
    const int64_t kend = causal_ ? std::min(Tk_, i0 + ni + off_) : Tk_;
    for (int64_t j0 = 0; j0 < kend; j0 += bk_) {
      const int64_t nj = std::min(bk_, Tk_ - j0);
      const float* kp = rows_f32(K_, b, h, j0, nj, D_, w.k.data(), &ldk);
      const float* vp = rows_f32(V_, b, h, j0, nj, D_, w.v.data(), &ldv);
      pair(w, bh, i0, ni, j0, nj, qp, ldq, gp, ldg, kp, ldk, vp, ldv, dq, nullptr, nullptr);
    }
  }

  const Operand<T> Q_, K_, V_, O_, dO_;
  const int64_t BH_, H_, Tq_, Tk_, D_, off_, bq_, bk_;
  const bool causal_;
  const float scale_;
  const float* lse_;
  const float* dlse_;
  float* dq_;
  float* dk_;
  float* dv_;
  std::vector<float> di_;  // (B, H, Tq)
};

// ---------------------------------------------------------------- merge

template <typename T>
void merge_impl(Tensor& out, Tensor& lse, const Tensor& out_blk, const Tensor& lse_blk) {
  const int64_t B = out.size(0), H = out.size(1), Tn = out.size(2), D = out.size(3);
  const int64_t rows = B * H * Tn;
  float* o = out.data<float>();
  float* l = lse.data<float>();
  const T* ob = static_cast<const T*>(out_blk.raw_data());
  const float* lb = lse_blk.data<float>();
  const Shape &so = out.strides(), &sl = lse.strides(), &sob = out_blk.strides(),
              &slb = lse_blk.strides();
#pragma omp parallel for schedule(static) if (rows * D >= 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = r % Tn, h = (r / Tn) % H, b = r / (Tn * H);
    float* orow = o + b * so[0] + h * so[1] + t * so[2];
    const T* brow = ob + b * sob[0] + h * sob[1] + t * sob[2];
    float& a = l[b * sl[0] + h * sl[1] + t * sl[2]];
    const float c = lb[b * slb[0] + h * slb[1] + t * slb[2]];
    if (c == kNegInf) continue;  // the block holds no keys for this row
    if (a == kNegInf) {          // the running pair holds none yet
      for (int64_t d = 0; d < D; ++d) orow[d * so[3]] = load_f32(brow[d * sob[3]]);
      a = c;
      continue;
    }
    // logaddexp without overflow: max + log1p(exp(-|a - c|)).
    const float lnew = std::max(a, c) + std::log1p(std::exp(-std::fabs(a - c)));
    const float wa = std::exp(a - lnew), wb = std::exp(c - lnew);
    for (int64_t d = 0; d < D; ++d)
      orow[d * so[3]] = orow[d * so[3]] * wa + load_f32(brow[d * sob[3]]) * wb;
    a = lnew;
  }
}

}  // namespace

namespace cpu {

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, float scale,
                       AttentionBlocks blocks, Tensor& out, Tensor& lse) {
  KEEL_DISPATCH_FLOAT(q.dtype(), "attention",
                      forward_impl<T>(q, k, v, causal, scale, blocks, out, lse));
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& dout, const Tensor& lse, const Tensor& dlse, bool causal,
                        float scale, AttentionBlocks blocks, Tensor& dq, Tensor& dk, Tensor& dv) {
  KEEL_DISPATCH_FLOAT(
      q.dtype(), "attention backward",
      Backward<T>(q, k, v, out, dout, lse, dlse, causal, scale, blocks, dq, dk, dv).run());
}

void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_blk, const Tensor& lse_blk) {
  KEEL_DISPATCH_FLOAT(out_blk.dtype(), "attention_merge_",
                      merge_impl<T>(out, lse, out_blk, lse_blk));
}

}  // namespace cpu
}  // namespace keel::kernels
