// CPU dropout: x is runs of consecutive logical indices (DropoutRuns), and
// one Philox call yields the uniforms of four consecutive logical elements,
// so each run is walked in groups of four. Runs are cut into pieces split
// across threads; a group straddling two pieces is drawn by both, each
// writing its own lanes. An element's mask depends only on its logical index.
#include "kernels/dropout.h"

#include <omp.h>

#include <algorithm>

#include "core/philox.h"
#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/dispatch.h"

namespace keel::kernels {

namespace {

// Elements of a run per work item (a multiple of 4): long runs still spread
// over every thread, short runs are one item each.
constexpr int64_t kPiece = 4096;

template <typename T>
void dropout_impl(const Tensor& x, double p, uint64_t seed, uint64_t offset,
                  const DropoutRuns& runs, Tensor& y) {
  // The mask is indexed by the row-major position, so a strided view is
  // copied once to make position and memory order agree.
  const Tensor xc = x.contiguous();  // x's shape
  const T* xp = xc.data<T>();
  T* yp = y.data<T>();  // contiguous
  const int64_t n = x.numel();
  if (n == 0) return;
  const int64_t run = runs.run;
  const int64_t pieces = (run + kPiece - 1) / kPiece;
  const int64_t items = runs.rows * pieces;
  const float scale = float(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static) if (n >= kParallelGrain && items > 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t r = item / pieces, j0 = (item % pieces) * kPiece;
    const int64_t len = std::min(kPiece, run - j0);
    // This piece is logical elements [lo, lo + len), x's elements from `first`.
    const uint64_t lo = runs.row_base(r) + uint64_t(j0);
    const int64_t first = r * run + j0;
    // Logical group G holds logical elements 4G..4G+3.
    for (uint64_t g = lo / 4, g_end = (lo + uint64_t(len) - 1) / 4; g <= g_end; ++g) {
      const Philox4 w = philox_block(seed, offset, g);
      for (int64_t lane = 0; lane < 4; ++lane) {
        const int64_t j = int64_t(g * 4 + uint64_t(lane) - lo);  // index in the piece
        if (j < 0 || j >= len) continue;
        const float keep = double(philox_uniform(w.v[lane])) > p ? scale : 0.0f;
        yp[first + j] = store_f32<T>(load_f32(xp[first + j]) * keep);
      }
    }
  }
}

}  // namespace

namespace cpu {

void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const DropoutRuns& runs,
             Tensor& y) {
  KEEL_DISPATCH_FLOAT(x.dtype(), "dropout", dropout_impl<T>(x, p, seed, offset, runs, y));
}

}  // namespace cpu
}  // namespace keel::kernels
