// Deterministic parameter-gradient sums for the CUDA row-wise norms
// (layernorm, rmsnorm): rows are cut into slices that depend only on the row
// count; each slice's column sums go to a (slices, C) f32 partial, and the
// partials of each column are added in slice order in f64 by one thread.
#pragma once

#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda {

struct ParamSlices {
  int64_t slices = 1, per_slice = 1;
  // At least 64 rows per slice (8 per lane of a 256-thread block), at most
  // 512 slices, so the partials stay small and each block has work.
  ParamSlices(int64_t rows, int64_t) {
    slices = std::clamp<int64_t>((rows + 63) / 64, 1, 512);
    per_slice = (rows + slices - 1) / slices;
    slices = std::max<int64_t>(1, (rows + per_slice - 1) / per_slice);
  }
};

template <int kUnused = 0>
__global__ void __launch_bounds__(256)
    sum_param_partials_kernel(const float* partial, int64_t slices, int64_t C, float* out) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += step) {
    double acc = 0.0;
    for (int64_t s = 0; s < slices; ++s) acc += double(partial[s * C + c]);
    out[c] = float(acc);
  }
}

// out[c] = sum over slices of partial[slice, c], in slice order.
inline void sum_param_partials(const float* partial, int64_t slices, int64_t C, float* out,
                               Device device, cudaStream_t stream) {
  sum_param_partials_kernel<<<grid_for(C, 256, device.index), 256, 0, stream>>>(partial, slices, C,
                                                                                out);
  KEEL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace keel::kernels::cuda
