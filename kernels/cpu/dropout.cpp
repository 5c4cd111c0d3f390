// CPU dropout: one Philox call yields the uniforms of four consecutive
// elements, so the loop runs over groups of four; groups are split across
// threads, and the mask of each element depends only on its index.
#include "kernels/dropout.h"

#include <omp.h>

#include <algorithm>

#include "core/philox.h"
#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/dispatch.h"

namespace keel::kernels {

namespace {

template <typename T>
void dropout_impl(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y) {
  // The mask is indexed by the row-major position, so a strided view is
  // copied once to make position and memory order agree.
  const Tensor xc = x.contiguous();  // x's shape
  const T* xp = xc.data<T>();
  T* yp = y.data<T>();  // contiguous
  const int64_t n = x.numel();
  const int64_t groups = (n + 3) / 4;
  const float scale = float(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
  for (int64_t g = 0; g < groups; ++g) {
    // Element 4g + lane draws philox_uniform_at(seed, offset, 4g + lane).
    const Philox4 r = philox_block(seed, offset, uint64_t(g));
    const int64_t i0 = g * 4, lanes = std::min<int64_t>(4, n - i0);
    for (int64_t lane = 0; lane < lanes; ++lane) {
      const float keep = double(philox_uniform(r.v[lane])) > p ? scale : 0.0f;
      yp[i0 + lane] = store_f32<T>(load_f32(xp[i0 + lane]) * keep);
    }
  }
}

}  // namespace

namespace cpu {

void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y) {
  KEEL_DISPATCH_FLOAT(x.dtype(), "dropout", dropout_impl<T>(x, p, seed, offset, y));
}

}  // namespace cpu
}  // namespace keel::kernels
