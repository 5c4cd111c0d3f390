// CPU reductions. x is viewed as (kept dims..., reduced dims...); when the
// kept dims are the contiguous inner block (e.g. a bias gradient summed over
// rows) rows are added into a per-thread slice of the output instead, so
// every load is sequential.
#include <cmath>
#include <limits>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/dispatch.h"
#include "kernels/reduce.h"

namespace keel::kernels::cpu {

namespace {

struct Split {
  Shape kept_sizes, kept_strides, red_sizes, red_strides;
  int64_t kept = 1, red = 1;
};

Split split_dims(const Tensor& x, const std::vector<int64_t>& rdims) {
  Split s;
  std::vector<bool> is_red(size_t(x.dim()), false);
  for (int64_t d : rdims) is_red[size_t(d)] = true;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (is_red[size_t(d)]) {
      s.red_sizes.push_back(x.size(d));
      s.red_strides.push_back(x.stride(d));
      s.red *= x.size(d);
    } else {
      s.kept_sizes.push_back(x.size(d));
      s.kept_strides.push_back(x.stride(d));
      s.kept *= x.size(d);
    }
  }
  return s;
}

inline int64_t offset_of(int64_t linear, const Shape& sizes, const Shape& strides) {
  int64_t off = 0;
  for (int64_t d = int64_t(sizes.size()) - 1; d >= 0; --d) {
    off += (linear % sizes[d]) * strides[d];
    linear /= sizes[d];
  }
  return off;
}

// Reduced dims (and kept dims) collapsed so the odometer is short.
template <typename T, typename Acc>
void reduce_generic(const Tensor& x, const Split& s, Acc acc_fn, float* out) {
  const T* p = static_cast<const T*>(x.raw_data());
  std::array<Shape, 1> rst{s.red_strides};
  StridedLayout<1> R = collapse_dims<1>(s.red_sizes, rst);
  const int64_t rin = R.sizes.back(), rin_st = R.strides[0].back();
  const int64_t rrows = s.red / std::max<int64_t>(rin, 1);
  Shape router_sizes(R.sizes.begin(), R.sizes.end() - 1);
  Shape router_strides(R.strides[0].begin(), R.strides[0].end() - 1);
#pragma omp parallel for schedule(static) if (s.kept * s.red >= kParallelGrain && s.kept > 1)
  for (int64_t k = 0; k < s.kept; ++k) {
    const T* base = p + offset_of(k, s.kept_sizes, s.kept_strides);
    auto state = acc_fn.init();
    for (int64_t r = 0; r < rrows; ++r) {
      const T* row = base + offset_of(r, router_sizes, router_strides);
      for (int64_t i = 0; i < rin; ++i) acc_fn.add(state, load_f32(row[i * rin_st]), r * rin + i);
    }
    out[k] = acc_fn.finish(state, s.red);
  }
}

struct SumAcc {
  double init() const { return 0.0; }
  void add(double& s, float v, int64_t) const { s += double(v); }
  float finish(double s, int64_t) const { return float(s); }
};

// Sum where kept dims form a contiguous inner block: out[k] = sum_r x[r, k].
template <typename T>
bool sum_outer(const Tensor& x, const Split& s, double* out) {
  // Kept dims must be contiguous among themselves with innermost stride 1.
  int64_t acc = 1;
  for (int64_t d = int64_t(s.kept_sizes.size()) - 1; d >= 0; --d) {
    if (s.kept_sizes[d] == 1) continue;
    if (s.kept_strides[d] != acc) return false;
    acc *= s.kept_sizes[d];
  }
  if (s.kept < 16) return false;
  const T* p = static_cast<const T*>(x.raw_data());
  const int threads = s.kept * s.red >= kParallelGrain ? omp_get_max_threads() : 1;
  const int64_t chunk = std::max<int64_t>(64, (s.kept + threads - 1) / threads);
#pragma omp parallel for schedule(static) if (threads > 1)
  for (int64_t k0 = 0; k0 < s.kept; k0 += chunk) {
    const int64_t n = std::min(chunk, s.kept - k0);
    double* o = out + k0;
    for (int64_t i = 0; i < n; ++i) o[i] = 0.0;
    for (int64_t r = 0; r < s.red; ++r) {
      const T* row = p + offset_of(r, s.red_sizes, s.red_strides) + k0;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] += double(load_f32(row[i]));
    }
  }
  return true;
}

template <typename T>
void store_all(const float* src, Tensor& out) {
  T* o = out.data<T>();
  for (int64_t i = 0; i < out.numel(); ++i) o[i] = store_f32<T>(src[i]);
}

}  // namespace

void sum(const Tensor& x, const std::vector<int64_t>& rdims, double scale, Tensor& out) {
  Split s = split_dims(x, rdims);
  std::vector<float> res(size_t(s.kept));
  KEEL_DISPATCH_FLOAT(x.dtype(), "sum", {
    std::vector<double> acc(size_t(s.kept));
    if (sum_outer<T>(x, s, acc.data())) {
      for (int64_t k = 0; k < s.kept; ++k) res[size_t(k)] = float(acc[size_t(k)] * scale);
    } else {
      reduce_generic<T>(x, s, SumAcc{}, res.data());
      if (scale != 1.0)
        for (float& v : res) v = float(double(v) * scale);
    }
    store_all<T>(res.data(), out);
  });
}

void var(const Tensor& x, const std::vector<int64_t>& rdims, int64_t correction, Tensor& out) {
  Split s = split_dims(x, rdims);
  std::vector<float> res(size_t(s.kept));
  // Welford's update: one pass, stable for large means.
  struct WelfordAcc {
    int64_t correction;
    struct St {
      double mean = 0, m2 = 0;
      int64_t n = 0;
    };
    St init() const { return {}; }
    void add(St& st, float v, int64_t) const {
      ++st.n;
      double d = double(v) - st.mean;
      st.mean += d / double(st.n);
      st.m2 += d * (double(v) - st.mean);
    }
    float finish(const St& st, int64_t n) const {
      int64_t denom = n - correction;
      return denom > 0 ? float(st.m2 / double(denom)) : std::numeric_limits<float>::quiet_NaN();
    }
  };
  KEEL_DISPATCH_FLOAT(x.dtype(), "var", {
    reduce_generic<T>(x, s, WelfordAcc{correction}, res.data());
    store_all<T>(res.data(), out);
  });
}

namespace {
// Max along one dim; ties keep the first index, a NaN wins and stays.
template <typename T>
void max_rows(const Tensor& x, const Split& s, float* res, int64_t* idx) {
  const T* p = static_cast<const T*>(x.raw_data());
  const int64_t n = s.red, st = s.red_strides[0];
#pragma omp parallel for schedule(static) if (s.kept * s.red >= kParallelGrain)
  for (int64_t k = 0; k < s.kept; ++k) {
    const T* row = p + offset_of(k, s.kept_sizes, s.kept_strides);
    float best = load_f32(row[0]);
    int64_t arg = 0;
    for (int64_t r = 1; r < n && !std::isnan(best); ++r) {
      float v = load_f32(row[r * st]);
      if (v > best || std::isnan(v)) best = v, arg = r;
    }
    res[k] = best;
    idx[k] = arg;
  }
}
}  // namespace

void max(const Tensor& x, int64_t dim, Tensor& values, Tensor& indices) {
  Split s = split_dims(x, {dim});
  std::vector<float> res(size_t(s.kept));
  KEEL_DISPATCH_FLOAT(x.dtype(), "max", {
    max_rows<T>(x, s, res.data(), indices.data<int64_t>());
    store_all<T>(res.data(), values);
  });
}

}  // namespace keel::kernels::cpu
