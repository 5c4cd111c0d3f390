// CPU parts of the vocabulary-parallel loss (kernels/vocab_parallel_cross_entropy.h):
// one `omp simd` pass per row for the local max, one for the sums relative
// to it, then O(N) loops for the rescale and the finish.
#include <cmath>
#include <limits>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/dispatch.h"
#include "kernels/vocab_parallel_cross_entropy.h"

namespace keel::kernels::cpu {

namespace {

// Every exp here takes a value minus its row max (<= 0).
using cpu::exp_nonpositive;

template <typename F>
void dispatch_index(const Tensor& targets, F&& f) {
  if (targets.dtype() == DType::I32)
    f(targets.data<int32_t>());
  else
    f(targets.data<int64_t>());
}

template <typename T, typename I>
void local_rows(const T* x, const I* t, int64_t N, int64_t Vl, int64_t ignore_index,
                int64_t start, bool smoothing, float* maxes, float* local) {
  float* m = local;
  float* se = local + N;
  float* xt = local + 2 * N;
  float* sd = smoothing ? local + 3 * N : nullptr;
#pragma omp parallel for schedule(static) if (N * Vl >= kParallelGrain && N > 1)
  for (int64_t r = 0; r < N; ++r) {
    const int64_t tr = int64_t(t[r]);
    maxes[r] = 0.0f;
    if (tr == ignore_index) continue;  // zero sums (the buffer starts zeroed)
    const T* xr = x + r * Vl;
    float mr = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mr)
    for (int64_t i = 0; i < Vl; ++i) mr = std::max(mr, load_f32(xr[i]));
    maxes[r] = mr;
    m[r] = mr;
    if (tr >= start && tr < start + Vl) xt[r] = load_f32(xr[tr - start]);
    // A shard of masked (padding) classes only: nothing to add, and x - m
    // would be NaN. The sum of x - M over it is -inf, as in the serial op.
    if (mr == -std::numeric_limits<float>::infinity()) {
      if (sd) sd[r] = mr;
      continue;
    }
    float e = 0.0f, d = 0.0f;
    if (sd) {
      // Shifted values are small, so the f32 sum keeps its precision however
      // large the logits are.
#pragma omp simd reduction(+ : e, d)
      for (int64_t i = 0; i < Vl; ++i) {
        const float z = load_f32(xr[i]) - mr;
        e += exp_nonpositive(z);
        d += z;
      }
      sd[r] = d;
    } else {
#pragma omp simd reduction(+ : e)
      for (int64_t i = 0; i < Vl; ++i) e += exp_nonpositive(load_f32(xr[i]) - mr);
    }
    se[r] = e;
  }
}

}  // namespace

int64_t vocab_ce_count_valid(const char* op, const Tensor& targets, int64_t ignore_index,
                             int64_t V) {
  int64_t n_valid = 0;
  dispatch_index(targets, [&](auto* t) {
    for (int64_t r = 0; r < targets.numel(); ++r) {
      const int64_t v = int64_t(t[r]);
      if (v == ignore_index) continue;
      KEEL_CHECK(v >= 0 && v < V, op, ": target ", v, " at row ", r,
                 " is out of range [0, V) for V = ", V, " (ignore_index ", ignore_index, ")");
      ++n_valid;
    }
  });
  return n_valid;
}

void vocab_ce_local(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                    int64_t start, VocabShardStats& out) {
  const int64_t N = logits.size(0), Vl = logits.size(1);
  float* maxes = out.maxes.data<float>();
  KEEL_DISPATCH_FLOAT(logits.dtype(), "vocab_parallel_cross_entropy", {
    dispatch_index(targets, [&](auto* t) {
      local_rows(static_cast<const T*>(logits.raw_data()), t, N, Vl, ignore_index, start,
                 out.local.size(0) == 4, maxes, out.local.data<float>());
    });
  });
  maxes[N] = float(Vl);
  maxes[N + 1] = -float(Vl);
}

void vocab_ce_rescale(const Tensor& local, const Tensor& global_maxes, int64_t Vl, Tensor& sums) {
  const int64_t N = local.size(1);
  const bool smoothing = local.size(0) == 4;
  const float* m = local.data<float>();
  const float* M = global_maxes.data<float>();
  float* out = sums.data<float>();
  for (int64_t r = 0; r < N; ++r) {
    // Ignored rows have m = M = 0 and zero sums, which stay zero.
    const float shift = m[r] - M[r];  // <= 0
    out[r] = m[N + r] * exp_nonpositive(shift);
    out[N + r] = m[2 * N + r];
    if (smoothing) out[2 * N + r] = m[3 * N + r] + float(Vl) * shift;
  }
}

void vocab_ce_finish(const Tensor& global_maxes, const Tensor& sums, const Tensor& targets,
                     int64_t ignore_index, int64_t V, int64_t n_valid, float eps,
                     VocabCeOut& out) {
  const int64_t N = targets.numel();
  const float* M = global_maxes.data<float>();
  const float* se = sums.data<float>();
  const float* xt = se + N;
  const float* sd = eps > 0.0f ? se + 2 * N : nullptr;
  float* lse = out.lse.data<float>();
  double total = 0.0;
  dispatch_index(targets, [&](auto* t) {
    for (int64_t r = 0; r < N; ++r) {
      if (int64_t(t[r]) == ignore_index) continue;
      const float log_se = std::log(se[r]);
      lse[r] = M[r] + log_se;
      double l = double(log_se) + (1.0 - double(eps)) * (double(M[r]) - double(xt[r]));
      // Guarded: a masked class (x = -inf) makes sd = -inf, and 0 * -inf is NaN.
      if (sd) l -= double(eps) * double(sd[r]) / double(V);
      total += l;
    }
  });
  *out.loss.data<float>() = float(total / double(n_valid));
}

}  // namespace keel::kernels::cpu
