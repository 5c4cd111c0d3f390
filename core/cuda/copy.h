// Data-movement kernels that let core's Tensor methods work on CUDA tensors
// (core/cuda/copy.cu): strided copies with broadcasting and dtype
// conversion, fill, arange and Philox random draws. Tensor::copy_, fill_,
// contiguous, clone, to, full, arange, randn and rand_uniform call these for
// CUDA tensors; everything runs on the device's current stream and gives
// exactly the values the CPU path gives.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace keel::cuda {

// dst = src broadcast to dst's shape, converted to dst's dtype as
// keel::cast_value does. Both on the same CUDA device; any strides.
void copy_tensor(Tensor& dst, const Tensor& src);

// Every element of dst (any strides) = value converted to dst's dtype.
void fill_tensor(Tensor& dst, double value);

// dst (1-D, contiguous): dst[i] = start + i * step, computed in double and
// converted as the CPU's arange does.
void arange_fill(Tensor& dst, double start, double step);

// dst (contiguous, floating): element i = philox_normal_at(seed, offset, i)
// (or, for uniform, low + span * (1 - philox_uniform_at(seed, offset, i)) in
// f32), rounded to dst's dtype.
void randn_fill(Tensor& dst, uint64_t seed, uint64_t offset);
void uniform_fill(Tensor& dst, uint64_t seed, uint64_t offset, float low, float span);

}  // namespace keel::cuda
