// Reductions over any set of dims: sum, mean, var, and max along one dim
// with its indices. Accumulation is in double on the CPU, so results do not
// depend on the thread count.
#pragma once

#include <utility>
#include <vector>

#include "core/tensor.h"

namespace keel::kernels {

// dims empty = all dims. Negative dims count from the end.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
// Variance with `correction` (1 = unbiased, 0 = population).
Tensor var(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction, bool keepdim);
// (values, indices as i64); ties take the first index. NaN propagates.
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim);

// Sums `x` down to `shape`, the inverse of broadcasting `shape` to x's shape.
Tensor sum_to(const Tensor& x, const Shape& shape);

// Normalised, sorted, unique dims (all dims when `dims` is empty).
std::vector<int64_t> reduce_dims(const Tensor& x, const std::vector<int64_t>& dims,
                                 const char* op);
// x's shape with the reduced dims set to 1 (keepdim) or removed.
Shape reduced_shape(const Shape& s, const std::vector<int64_t>& rdims, bool keepdim);

}  // namespace keel::kernels
