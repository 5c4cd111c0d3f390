// Vocab-parallel cross-entropy on host tensors. Per row, with M the global
// row max and every sum over the full vocabulary assembled from the shards:
//   se = sum_v exp(x_v - M),  sd = sum_v (x_v - M),  xt = x[target],
//   loss = log(se) + (1 - eps)(M - xt) - eps * sd / V,  lse = M + log(se),
// which is the serial kernel's formula (kernels/cpu/cross_entropy.cpp),
// relative to the max so that large logits do not cancel. Collectives: one
// Max all-reduce of the N row maxes (plus two values that check the shard
// widths agree), one Sum all-reduce of [se | xt | sd] in one (k, N) buffer.
// xt is nonzero on exactly one rank, so its sum is exact. The backward
// rebuilds the shard's softmax from the saved lse (N floats), never stored:
//   dx_v = (exp(x_v - lse) - eps/V - (1 - eps)[v == target]) * dloss / n_valid.
// Row losses are added in row order in f64, so the loss does not depend on
// the thread count. Ignored rows are skipped in both passes (zero gradient).
#include "parallel/vocab_parallel_cross_entropy.h"

#include <cmath>
#include <limits>
#include <vector>

#include "autograd/autograd.h"
#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/cross_entropy.h"

namespace keel::parallel {

namespace {

constexpr const char* kOp = "vocab_parallel_cross_entropy";

// Every exp here takes a value minus its row max or log-sum-exp (<= 0).
using kernels::cpu::exp_nonpositive;

// This rank's place in the full vocabulary.
struct Shard {
  int64_t N = 0;      // rows
  int64_t Vl = 0;     // local classes
  int64_t V = 0;      // full vocabulary, Vl * tp.size()
  int64_t start = 0;  // first global class id held here
};

void check_inputs(const Tensor& logits, const Tensor& targets, const Communicator& tp,
                  double label_smoothing) {
  KEEL_CHECK(logits.defined(), kOp, ": logits are undefined");
  // The serial op's checks, then what this one adds.
  kernels::check_cross_entropy_inputs(kOp, logits, targets, label_smoothing,
                                      "vocabulary shard dim Vl");
  // The loops below are host code; a device path would go through the NCCL
  // communicator and a kernel of its own, which this op does not have yet.
  for (const Tensor* t : {&logits, &targets})
    KEEL_CHECK(t->device().is_cpu(), kOp,
               ": only host tensors are supported (no CUDA path yet), got ", t->describe());
  KEEL_CHECK(tp.device().is_cpu(), kOp, ": communicator '", tp.name(),
             "' moves device buffers, but this op works on host tensors");
}

// Runs serially before any collective, from the targets alone (identical on
// every rank), so a bad target fails on every rank and no rank is left
// waiting in an all-reduce.
template <typename I>
int64_t count_valid(const I* t, const Shard& s, int64_t ignore_index, const Tensor& logits,
                    const Communicator& tp) {
  int64_t n_valid = 0;
  for (int64_t r = 0; r < s.N; ++r) {
    const int64_t v = int64_t(t[r]);
    if (v == ignore_index) continue;
    KEEL_CHECK(v >= 0 && v < s.V, kOp, ": target ", v, " at row ", r,
               " is out of range [0, V) for V = ", s.V, " (", tp.size(), " shards of ", s.Vl,
               " over communicator '", tp.name(), "', local logits ", logits.describe(),
               ", ignore_index ", ignore_index, ")");
    ++n_valid;
  }
  return n_valid;
}

// m[r] = max of the local row (0 for ignored rows: they are never used).
template <typename T, typename I>
void local_max(const T* x, const I* t, const Shard& s, int64_t ignore_index, float* m) {
#pragma omp parallel for schedule(static) if (s.N * s.Vl >= kParallelGrain && s.N > 1)
  for (int64_t r = 0; r < s.N; ++r) {
    if (int64_t(t[r]) == ignore_index) {
      m[r] = 0.0f;
      continue;
    }
    const T* xr = x + r * s.Vl;
    float mr = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mr)
    for (int64_t i = 0; i < s.Vl; ++i) mr = std::max(mr, load_f32(xr[i]));
    m[r] = mr;
  }
}

// sums (k, N): row 0 sum(exp(x - M)), row 1 the target logit (0 when another
// rank holds it), row 2 (with smoothing) sum(x - M). M is the global max.
template <typename T, typename I>
void local_sums(const T* x, const I* t, const Shard& s, int64_t ignore_index, bool smoothing,
                const float* M, float* sums) {
  float* se = sums;
  float* xt = sums + s.N;
  float* sd = smoothing ? sums + 2 * s.N : nullptr;
#pragma omp parallel for schedule(static) if (s.N * s.Vl >= kParallelGrain && s.N > 1)
  for (int64_t r = 0; r < s.N; ++r) {
    const int64_t tr = int64_t(t[r]);
    se[r] = 0.0f;
    xt[r] = 0.0f;
    if (sd) sd[r] = 0.0f;
    if (tr == ignore_index) continue;
    const T* xr = x + r * s.Vl;
    const float m = M[r];
    float e = 0.0f, d = 0.0f;
    if (sd) {
      // Shifted values are small, so the f32 sum keeps its precision however
      // large the logits are.
#pragma omp simd reduction(+ : e, d)
      for (int64_t i = 0; i < s.Vl; ++i) {
        const float z = load_f32(xr[i]) - m;
        e += exp_nonpositive(z);
        d += z;
      }
      sd[r] = d;
    } else {
#pragma omp simd reduction(+ : e)
      for (int64_t i = 0; i < s.Vl; ++i) e += exp_nonpositive(load_f32(xr[i]) - m);
    }
    se[r] = e;
    if (tr >= s.start && tr < s.start + s.Vl) xt[r] = load_f32(xr[tr - s.start]);
  }
}

template <typename T, typename I>
void local_backward(const T* x, const I* t, const float* lse, const Shard& s, int64_t ignore_index,
                    float eps, float scale, T* dx) {
  const float off = eps / float(s.V);  // the smoothing mass every class of the full V gets
#pragma omp parallel for schedule(static) if (s.N * s.Vl >= kParallelGrain && s.N > 1)
  for (int64_t r = 0; r < s.N; ++r) {
    const T* xr = x + r * s.Vl;
    T* dr = dx + r * s.Vl;
    const int64_t tr = int64_t(t[r]);
    if (tr == ignore_index) {
#pragma omp simd
      for (int64_t i = 0; i < s.Vl; ++i) dr[i] = store_f32<T>(0.0f);
      continue;
    }
    const float l = lse[r];
#pragma omp simd
    for (int64_t i = 0; i < s.Vl; ++i)
      dr[i] = store_f32<T>((exp_nonpositive(load_f32(xr[i]) - l) - off) * scale);
    // Recomputed rather than patched, so bf16/f16 round once.
    if (tr >= s.start && tr < s.start + s.Vl) {
      const int64_t i = tr - s.start;
      dr[i] = store_f32<T>((exp_nonpositive(load_f32(xr[i]) - l) - off - (1.0f - eps)) * scale);
    }
  }
}

// Binds T to the logits dtype and I to the target index type.
template <typename F>
void dispatch(const Tensor& logits, const Tensor& targets, const char* what, F&& f) {
  KEEL_DISPATCH_FLOAT(logits.dtype(), what, {
    if (targets.dtype() == DType::I32)
      f(T{}, int32_t{});
    else
      f(T{}, int64_t{});
  });
}

struct ForwardOut {
  Tensor loss;  // () f32
  Tensor lse;   // (N) f32
  int64_t n_valid = 0;
};

// lc (N, Vl) and tc (N) contiguous.
ForwardOut forward(const Tensor& lc, const Tensor& tc, const Shard& s, Communicator& tp,
                   int64_t ignore_index, float eps) {
  ForwardOut out;
  out.loss = zeros({}, DType::F32);    // ()
  out.lse = zeros({s.N}, DType::F32);  // (N)
  dispatch(lc, tc, kOp, [&](auto, auto iv) {
    using I = decltype(iv);
    out.n_valid = count_valid(tc.data<I>(), s, ignore_index, lc, tp);
  });
  // Every rank sees the same targets, so every rank returns here together:
  // the loss is the constant 0 and no collective is needed.
  if (out.n_valid == 0) return out;

  // (N + 2): row maxes, then Vl and -Vl, whose maxima over the group are
  // equal only when every rank holds the same shard width (f32 is exact
  // for widths below 2^24).
  Tensor mx = empty({s.N + 2}, DType::F32);
  float* m = mx.data<float>();
  const bool smoothing = eps > 0.0f;
  const int64_t k = smoothing ? 3 : 2;
  Tensor sums = empty({k * s.N}, DType::F32);  // (k, N) flat: se | xt | sd
  dispatch(lc, tc, kOp, [&](auto tv, auto iv) {
    using T = decltype(tv);
    using I = decltype(iv);
    const T* x = static_cast<const T*>(lc.raw_data());
    const I* t = tc.data<I>();
    local_max(x, t, s, ignore_index, m);
    m[s.N] = float(s.Vl);
    m[s.N + 1] = -float(s.Vl);
    tp.all_reduce_(mx, ReduceOp::Max);
    KEEL_CHECK(m[s.N] == -m[s.N + 1], kOp, ": the ranks of communicator '", tp.name(),
               "' hold vocabulary shards of different widths (between ", -m[s.N + 1], " and ",
               m[s.N], " columns; this rank ", s.Vl, ")");
    local_sums(x, t, s, ignore_index, smoothing, m, sums.data<float>());
  });
  tp.all_reduce_(sums, ReduceOp::Sum);

  const float* se = sums.data<float>();
  const float* xt = se + s.N;
  const float* sd = smoothing ? se + 2 * s.N : nullptr;
  float* lse = out.lse.data<float>();
  double total = 0.0;
  dispatch(lc, tc, kOp, [&](auto, auto iv) {
    using I = decltype(iv);
    const I* t = tc.data<I>();
    for (int64_t r = 0; r < s.N; ++r) {
      if (int64_t(t[r]) == ignore_index) continue;
      const float log_se = std::log(se[r]);
      lse[r] = m[r] + log_se;
      double l = double(log_se) + (1.0 - double(eps)) * (double(m[r]) - double(xt[r]));
      // Guarded: a masked class (x = -inf) makes sd = -inf, and 0 * -inf is NaN.
      if (sd) l -= double(eps) * double(sd[r]) / double(s.V);
      total += l;
    }
  });
  *out.loss.data<float>() = float(total / double(out.n_valid));
  return out;
}

}  // namespace

Tensor vocab_parallel_cross_entropy(const Tensor& logits, const Tensor& targets, Communicator& tp,
                                    int64_t ignore_index, double label_smoothing) {
  check_inputs(logits, targets, tp, label_smoothing);
  Shard s;
  s.Vl = logits.size(-1);
  s.N = logits.numel() / s.Vl;
  s.V = s.Vl * tp.size();
  s.start = int64_t(tp.rank()) * s.Vl;
  // Detached: the saved copies must not hold the graph that produced them.
  Tensor lc = logits.detach().contiguous().view({s.N, s.Vl});  // (N, Vl)
  Tensor tc = targets.detach().contiguous().view({s.N});       // (N)
  const float eps = float(label_smoothing);
  ForwardOut out = forward(lc, tc, s, tp, ignore_index, eps);
  if (!any_requires_grad({logits})) return out.loss;

  // Saved: the logits, the targets and lse (N floats); the backward is local,
  // so the communicator is not kept.
  Tensor lse = out.lse;
  const int64_t n_valid = out.n_valid;
  const Shape shape = logits.sizes();
  const DType dtype = logits.dtype();
  record(kOp, {logits}, {out.loss},
         [lc, tc, lse, n_valid, s, ignore_index, eps, shape, dtype](BackwardCtx& c) {
           const Tensor& dloss = c.grad();
           KEEL_CHECK(dloss.numel() == 1 && dloss.device().is_cpu(), kOp,
                      " backward: the loss gradient must be one host value, got ",
                      dloss.describe());
           // With no valid row the loss is the constant 0, so its gradient is zero.
           if (n_valid == 0) return std::vector<Tensor>{zeros(shape, dtype)};
           Tensor dlogits = empty(shape, dtype);  // (..., Vl), every element written
           const float scale = float(dloss.item() / double(n_valid));
           dispatch(lc, tc, "vocab_parallel_cross_entropy backward", [&](auto tv, auto iv) {
             using T = decltype(tv);
             using I = decltype(iv);
             local_backward(static_cast<const T*>(lc.raw_data()), tc.data<I>(), lse.data<float>(),
                            s, ignore_index, eps, scale, static_cast<T*>(dlogits.raw_data()));
           });
           return std::vector<Tensor>{dlogits};
         });
  return out.loss;
}

}  // namespace keel::parallel
