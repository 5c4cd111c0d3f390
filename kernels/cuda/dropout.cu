// CUDA dropout from the same Philox stream and the same logical addressing
// as the CPU path (kernels/dropout.h): x is runs of consecutive logical
// indices (DropoutRuns, built by the launcher), an element is kept iff
// philox_uniform_at(seed, offset, logical index) > p, compared in f64 as on
// the CPU, and kept values are scaled by 1/(1-p) in f32. So the mask, and
// for f32 every output bit, is the CPU's. A thread takes one logical group
// of four elements (the four words of one Philox call) within one run; a
// dense input is read directly, a strided one through its layout (no copy).
#include "core/philox.h"
#include "kernels/cuda/common.cuh"
#include "kernels/dropout.h"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;

// The most groups of four logical elements a run of `run` elements touches
// (it may start at any lane).
int64_t groups_per_run(int64_t run) { return (run + 2) / 4 + 1; }

template <typename T, bool Dense>
__global__ void __launch_bounds__(kThreads)
    dropout_kernel(const T* x, Layout<1> L, DropoutRuns runs, int64_t per_run, double p,
                   float scale, uint64_t seed, uint64_t offset, T* y) {
  const int64_t items = runs.rows * per_run;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < items; item += step) {
    const int64_t r = runs.rows == 1 ? 0 : item / per_run;
    // Run r is logical elements [lo, lo + run); logical group G holds 4G..4G+3.
    const uint64_t lo = runs.row_base(r);
    const uint64_t g = lo / 4 + uint64_t(item - r * per_run);
    if (g * 4 >= lo + uint64_t(runs.run)) continue;  // past the run's last group
    const Philox4 w = philox_block(seed, offset, g);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t j = int64_t(g * 4 + uint64_t(lane) - lo);  // index in the run
      if (j < 0 || j >= runs.run) continue;
      const int64_t i = r * runs.run + j;  // x's row-major position
      int64_t off[1] = {i};
      if constexpr (!Dense) layout_offsets<1>(L, uint64_t(i), off);
      const float keep = double(philox_uniform(w.v[lane])) > p ? scale : 0.0f;
      y[i] = from_f32<T>(__fmul_rn(to_f32(x[off[0]]), keep));
    }
  }
}

}  // namespace

// y contiguous, x any strides.
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const DropoutRuns& runs,
             Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const float scale = float(1.0 / (1.0 - p));
  const Layout<1> L = make_layout<1>(x.sizes(), {x.strides()});
  const bool dense = L.ndim == 1 && L.strides[0][0] == 1;
  const int64_t per_run = groups_per_run(runs.run);
  const unsigned grid = grid_for(runs.rows * per_run, kThreads, x.device().index);
  cudaStream_t stream = stream_of(x);
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "dropout", {
    if (dense)
      dropout_kernel<T, true><<<grid, kThreads, 0, stream>>>(
          data_ptr<const T>(x), L, runs, per_run, p, scale, seed, offset, data_ptr<T>(y));
    else
      dropout_kernel<T, false><<<grid, kThreads, 0, stream>>>(
          data_ptr<const T>(x), L, runs, per_run, p, scale, seed, offset, data_ptr<T>(y));
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace keel::kernels::cuda
