// CUDA dropout from the same Philox stream as the CPU path: element i
// (row-major position) is kept iff philox_uniform_at(seed, offset, i) > p,
// compared in f64 as on the CPU, and kept values are scaled by 1/(1-p) in
// f32. So the mask, and for f32 every output bit, is the CPU's. A thread
// takes a group of four elements, the four words of one Philox call; a
// dense input is read directly, a strided one through its layout (no copy).
#include "core/philox.h"
#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T, bool Dense>
__global__ void __launch_bounds__(kThreads)
    dropout_kernel(const T* x, Layout<1> L, int64_t n, double p, float scale, uint64_t seed,
                   uint64_t offset, uint64_t base, T* y) {
  // x's element i is stream element base + i; stream group G holds 4G..4G+3.
  const uint64_t first = base / 4;
  const int64_t groups = int64_t((base + uint64_t(n) - 1) / 4 - first) + 1;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < groups; k += step) {
    const uint64_t g = first + uint64_t(k);
    const Philox4 r = philox_block(seed, offset, g);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = int64_t(g * 4 + uint64_t(lane) - base);
      if (i < 0 || i >= n) continue;
      int64_t off[1] = {i};
      if constexpr (!Dense) layout_offsets<1>(L, uint64_t(i), off);
      const float keep = double(philox_uniform(r.v[lane])) > p ? scale : 0.0f;
      y[i] = from_f32<T>(__fmul_rn(to_f32(x[off[0]]), keep));
    }
  }
}

}  // namespace

// y contiguous, x any strides.
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, uint64_t base, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const float scale = float(1.0 / (1.0 - p));
  const Layout<1> L = make_layout<1>(x.sizes(), {x.strides()});
  const bool dense = L.ndim == 1 && L.strides[0][0] == 1;
  const unsigned grid = grid_for((n + 3) / 4 + 1, kThreads, x.device().index);
  cudaStream_t stream = stream_of(x);
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "dropout", {
    if (dense)
      dropout_kernel<T, true><<<grid, kThreads, 0, stream>>>(data_ptr<const T>(x), L, n, p, scale,
                                                             seed, offset, base, data_ptr<T>(y));
    else
      dropout_kernel<T, false><<<grid, kThreads, 0, stream>>>(data_ptr<const T>(x), L, n, p, scale,
                                                              seed, offset, base, data_ptr<T>(y));
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace keel::kernels::cuda
