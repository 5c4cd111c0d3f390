// CPU AdamW and sum of squares: flat OpenMP loops over contiguous data.
#include <cmath>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/adamw.h"

namespace keel::kernels::cpu {

namespace {

template <typename P, typename G>
void adamw_t(P* p, const G* g, float* m, float* v, int64_t n, const AdamWStep& hp) {
  const float b1 = float(hp.beta1), b2 = float(hp.beta2);
  const float bc1 = float(1.0 - std::pow(hp.beta1, double(hp.step)));
  const float bc2 = float(1.0 - std::pow(hp.beta2, double(hp.step)));
  const float lr = float(hp.lr), eps = float(hp.eps);
  const float decay = float(1.0 - hp.lr * hp.weight_decay);
  const float scale = float(hp.grad_scale);
  const float inv_bc2_sqrt = 1.0f / std::sqrt(bc2);
  const float step_size = lr / bc1;
#pragma omp parallel for simd schedule(static) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    float gi = load_f32(g[i]) * scale;
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float pi = load_f32(p[i]) * decay;
    p[i] = store_f32<P>(pi - step_size * mi / (std::sqrt(vi) * inv_bc2_sqrt + eps));
  }
}

template <typename T>
double sum_squares_t(const T* x, int64_t n) {
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    double xi = double(load_f32(x[i]));
    total += xi * xi;
  }
  return total;
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& hp) {
  float* mp = m.data<float>();
  float* vp = v.data<float>();
  KEEL_DISPATCH_FLOAT(param.dtype(), "adamw param", {
    using PT = T;
    KEEL_DISPATCH_FLOAT(grad.dtype(), "adamw grad",
                        adamw_t<PT, T>(static_cast<PT*>(param.raw_data()),
                                       static_cast<const T*>(grad.raw_data()), mp, vp,
                                       param.numel(), hp));
  });
}

double sum_squares(const Tensor& x) {
  double out = 0;
  KEEL_DISPATCH_FLOAT(x.dtype(), "sum_squares",
                      out = sum_squares_t(static_cast<const T*>(x.raw_data()), x.numel()));
  return out;
}

}  // namespace keel::kernels::cpu
