// Test helpers for boxes and sharded layouts, written by brute force over
// the elements so they check core/box.h and nn/param_spec.h independently:
// which boxes hold each element, the flat positions of a union of boxes in
// row-major order, and the local tensor a ParamSpec defines, built by
// narrowing each segment's chunk out of the logical tensor.
#pragma once

#include <vector>

#include "core/box.h"
#include "nn/param_spec.h"

namespace keel::testing {

// The multi-index of flat position `flat` in `shape`.
inline Shape unravel(const Shape& shape, int64_t flat) {
  Shape idx(shape.size(), 0);
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}

inline bool in_box(const Box& b, const Shape& idx) {
  for (size_t d = 0; d < idx.size(); ++d)
    if (idx[d] < b.offset[d] || idx[d] >= b.offset[d] + b.count[d]) return false;
  return true;
}

// How many of the boxes hold each element of `shape`, in flat order.
inline std::vector<int> multiplicity(const Shape& shape, const std::vector<Box>& boxes) {
  std::vector<int> out(size_t(shape_numel(shape)), 0);
  for (int64_t i = 0; i < shape_numel(shape); ++i)
    for (const Box& b : boxes) out[size_t(i)] += in_box(b, unravel(shape, i)) ? 1 : 0;
  return out;
}

// The flat positions of the boxes' union in row-major order; an element in
// two boxes is listed twice (which a caller's check then catches).
inline std::vector<int64_t> union_order(const Shape& shape, const std::vector<Box>& boxes) {
  std::vector<int64_t> out;
  const std::vector<int> m = multiplicity(shape, boxes);
  for (size_t i = 0; i < m.size(); ++i)
    for (int k = 0; k < m[i]; ++k) out.push_back(int64_t(i));
  return out;
}

// The local tensor `spec` gives its rank of `logical`: the concatenation
// along the sharded dim of the rank's chunk of each of the `stride` segments.
inline Tensor expected_local(const Tensor& logical, const nn::ParamSpec& spec) {
  if (!spec.sharded()) return logical.clone();
  const int64_t d = spec.shard_dim, segment = logical.size(d) / spec.stride;
  const int64_t chunk = segment / spec.shard_count;
  Tensor local = empty(nn::local_shape(spec), logical.dtype());
  for (int64_t seg = 0; seg < spec.stride; ++seg)
    local.narrow(d, seg * chunk, chunk)
        .copy_(logical.narrow(d, seg * segment + spec.shard_rank * chunk, chunk));
  return local;
}

inline nn::ParamSpec split_spec(const Shape& logical, int64_t dim, int64_t stride, int rank,
                                int count) {
  nn::ParamSpec s;
  s.logical = logical;
  s.shard_dim = dim;
  s.stride = stride;
  s.shard_rank = rank;
  s.shard_count = count;
  return s;
}

}  // namespace keel::testing
