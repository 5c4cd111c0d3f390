// Boxes: axis-aligned blocks of a row-major tensor (an offset and a count
// per dimension), the unit in which a rank's shard of a logical tensor is
// described (nn/param_spec.h), drawn (randn_boxes) and read or written in a
// checkpoint (trainer/checkpoint.h, where a box is an HDF5 hyperslab). Pure
// index arithmetic: no storage, no communication.
//
// A set of disjoint boxes stands for the elements of their union listed in
// the tensor's row-major order, whatever order the boxes come in: the order
// in which HDF5 transfers a union of hyperslabs, and the order a rank's local
// shard keeps its elements in (nn/param_spec.h, "order invariant").
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace keel {

struct Box {
  Shape offset, count;  // one entry per dimension; a scalar's box has both empty
  int64_t numel() const { return shape_numel(count); }
};

std::string box_str(const Box& b);  // "[0:2, 3:5]": half-open ranges per dimension
// One offset and count per dimension of `shape`, counts >= 0, inside `shape`.
bool box_in_bounds(const Box& b, const Shape& shape);
// The boxes share at least one element (both of the same rank).
bool boxes_overlap(const Box& a, const Box& b);
int64_t boxes_numel(const std::vector<Box>& boxes);
// The row-major flat position of `index` (one coordinate per dimension) in `shape`.
int64_t flat_index(const Shape& shape, const Shape& index);

// The boxes whose union is the flat elements [begin, end) of the row-major
// tensor of `shape`, in flat order: a partial row at each end and a block of
// whole rows between them, so at most 2N-1 boxes for N dimensions (one for a
// scalar's [0, 1), none for an empty range). A range outside [0, numel) is a
// keel::Error.
std::vector<Box> flat_range_boxes(const Shape& shape, int64_t begin, int64_t end);

// A contiguous run [begin, end) of row-major flat positions, from boxes[box].
struct FlatRun {
  int64_t begin = 0, end = 0;
  size_t box = 0;
};
// The runs the (in-bounds) boxes' elements form, sorted by begin. A box
// whose trailing dimensions are whole is one run per index of the dimensions
// before them, so a block of whole rows is a single run.
std::vector<FlatRun> box_runs(const Shape& shape, const std::vector<Box>& boxes);

// Indices (i < j) of two in-bounds boxes that share an element, or nullopt
// when the boxes are pairwise disjoint. O(R log R) in the number of runs.
std::optional<std::pair<size_t, size_t>> find_overlap(const Shape& shape,
                                                      const std::vector<Box>& boxes);

// What is wrong with `boxes` as disjoint boxes of a tensor of `shape`, naming
// the box (or the two that overlap); "" when nothing is.
std::string boxes_problem(const Shape& shape, const std::vector<Box>& boxes);

}  // namespace keel
