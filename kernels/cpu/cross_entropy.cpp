// CPU fused cross-entropy over contiguous (N, V) logits. Forward, per row:
// one `omp simd` pass for the max, one for sum(exp(x - max)) and sum(x - max)
// (for label smoothing); lse = max + log(sum). Backward, per row, one
// pass: p = exp(x - lse), dx = (p - eps/V - (1 - eps)[v == target]) * scale.
// Row losses are kept per row and added in row order in f64, so the loss
// does not depend on the thread count.
#include "kernels/cross_entropy.h"

#include <cmath>
#include <limits>
#include <vector>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/dispatch.h"

namespace keel::kernels {

namespace {

// Every exp here takes a value minus its row max or log-sum-exp (<= 0).
using cpu::exp_nonpositive;

// Runs serially before any parallel loop: an exception must not leave an
// OpenMP region.
template <typename I>
int64_t count_valid(const I* t, int64_t N, int64_t V, int64_t ignore_index, const Tensor& logits) {
  int64_t n_valid = 0;
  for (int64_t r = 0; r < N; ++r) {
    const int64_t v = int64_t(t[r]);
    if (v == ignore_index) continue;
    KEEL_CHECK(v >= 0 && v < V, "cross_entropy: target ", v, " at row ", r,
               " is out of range [0, V) for V = ", V, " (logits ", logits.describe(),
               ", ignore_index ", ignore_index, ")");
    ++n_valid;
  }
  return n_valid;
}

template <typename T, typename I>
int64_t forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, float eps,
                Tensor& loss, float* lse) {
  const int64_t N = logits.size(0), V = logits.size(1);
  const T* x = static_cast<const T*>(logits.raw_data());
  const I* t = static_cast<const I*>(targets.raw_data());
  const int64_t n_valid = count_valid(t, N, V, ignore_index, logits);
  std::vector<double> row_loss(size_t(N), 0.0);  // (N)
#pragma omp parallel for schedule(static) if (N * V >= kParallelGrain && N > 1)
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = x + r * V;
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < V; ++i) m = std::max(m, load_f32(xr[i]));
    // sd = sum(x - m), for label smoothing: shifted values are small, so the
    // f32 sum keeps its precision however large the logits are.
    float se = 0.0f, sd = 0.0f;
#pragma omp simd reduction(+ : se, sd)
    for (int64_t i = 0; i < V; ++i) {
      float d = load_f32(xr[i]) - m;
      se += exp_nonpositive(d);
      sd += d;
    }
    const float log_se = std::log(se);
    lse[r] = m + log_se;
    const int64_t tr = int64_t(t[r]);
    if (tr == ignore_index) continue;
    // Relative to the max, so large logits do not cancel:
    // lse - (1-eps) x_t - eps mean(x) = log_se + (1-eps)(m - x_t) - eps mean(x - m).
    const double xt = double(load_f32(xr[tr]));
    double l = double(log_se) + (1.0 - double(eps)) * (double(m) - xt);
    // Guarded: a masked class (x = -inf) makes sd = -inf, and 0 * -inf is NaN.
    if (eps > 0.0f) l -= double(eps) * double(sd) / double(V);
    row_loss[size_t(r)] = l;
  }
  double total = 0.0;
  for (double l : row_loss) total += l;
  *loss.data<float>() = n_valid > 0 ? float(total / double(n_valid)) : 0.0f;
  return n_valid;
}

template <typename T, typename I>
void backward(const Tensor& logits, const Tensor& targets, const float* lse, int64_t ignore_index,
              float eps, float scale, const ClassShard& shard, Tensor& dlogits) {
  const int64_t N = logits.size(0), V = logits.size(1);
  const T* x = static_cast<const T*>(logits.raw_data());
  const I* t = static_cast<const I*>(targets.raw_data());
  T* dx = static_cast<T*>(dlogits.raw_data());
  const float off = eps / float(shard.total);  // the smoothing mass every class gets
#pragma omp parallel for schedule(static) if (N * V >= kParallelGrain && N > 1)
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = x + r * V;
    T* dr = dx + r * V;
    const int64_t tr = int64_t(t[r]);
    if (tr == ignore_index) {
#pragma omp simd
      for (int64_t i = 0; i < V; ++i) dr[i] = store_f32<T>(0.0f);
      continue;
    }
    const float l = lse[r];
#pragma omp simd
    for (int64_t i = 0; i < V; ++i)
      dr[i] = store_f32<T>((exp_nonpositive(load_f32(xr[i]) - l) - off) * scale);
    // The target's term is recomputed rather than patched, so bf16/f16 round
    // once; it is in another shard's columns when out of [0, V).
    const int64_t i = tr - shard.start;
    if (i >= 0 && i < V)
      dr[i] = store_f32<T>((exp_nonpositive(load_f32(xr[i]) - l) - off - (1.0f - eps)) * scale);
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

}  // namespace

namespace cpu {

int64_t cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                      float smoothing, Tensor& loss, float* lse) {
  int64_t n_valid = 0;
  dispatch(logits, targets, "cross_entropy", [&](auto tv, auto iv) {
    using T = decltype(tv);
    using I = decltype(iv);
    n_valid = forward<T, I>(logits, targets, ignore_index, smoothing, loss, lse);
  });
  return n_valid;
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const float* lse,
                            int64_t ignore_index, float smoothing, float scale,
                            const ClassShard& shard, Tensor& dlogits) {
  dispatch(logits, targets, "cross_entropy backward", [&](auto tv, auto iv) {
    using T = decltype(tv);
    using I = decltype(iv);
    backward<T, I>(logits, targets, lse, ignore_index, smoothing, scale, shard, dlogits);
  });
}

}  // namespace cpu
}  // namespace keel::kernels
