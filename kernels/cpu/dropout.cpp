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
void dropout_impl(const Tensor& x, double p, uint64_t seed, uint64_t offset, uint64_t base,
                  Tensor& y) {
  // The mask is indexed by the row-major position, so a strided view is
  // copied once to make position and memory order agree.
  const Tensor xc = x.contiguous();  // x's shape
  const T* xp = xc.data<T>();
  T* yp = y.data<T>();  // contiguous
  const int64_t n = x.numel();
  if (n == 0) return;
  // Stream element 4G + lane draws philox_uniform_at(seed, offset, 4G + lane);
  // x's element i is stream element base + i.
  const uint64_t first = base / 4, last = (base + uint64_t(n) - 1) / 4;
  const int64_t groups = int64_t(last - first) + 1;
  const float scale = float(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
  for (int64_t k = 0; k < groups; ++k) {
    const uint64_t g = first + uint64_t(k);
    const Philox4 r = philox_block(seed, offset, g);
    for (int64_t lane = 0; lane < 4; ++lane) {
      const int64_t i = int64_t(g * 4 + uint64_t(lane) - base);
      if (i < 0 || i >= n) continue;
      const float keep = double(philox_uniform(r.v[lane])) > p ? scale : 0.0f;
      yp[i] = store_f32<T>(load_f32(xp[i]) * keep);
    }
  }
}

}  // namespace

namespace cpu {

void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, uint64_t base, Tensor& y) {
  KEEL_DISPATCH_FLOAT(x.dtype(), "dropout", dropout_impl<T>(x, p, seed, offset, base, y));
}

}  // namespace cpu
}  // namespace keel::kernels
