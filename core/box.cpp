// Box arithmetic: flat ranges as boxes, boxes as flat runs, overlap checks.
#include "core/box.h"

#include <algorithm>
#include <sstream>

namespace keel {

std::string box_str(const Box& b) {
  std::ostringstream os;
  os << "[";
  for (size_t d = 0; d < b.offset.size() && d < b.count.size(); ++d)
    os << (d ? ", " : "") << b.offset[d] << ":" << b.offset[d] + b.count[d];
  os << "]";
  return os.str();
}

bool box_in_bounds(const Box& b, const Shape& shape) {
  if (b.offset.size() != shape.size() || b.count.size() != shape.size()) return false;
  for (size_t d = 0; d < shape.size(); ++d)
    if (b.offset[d] < 0 || b.count[d] < 0 || b.offset[d] + b.count[d] > shape[d]) return false;
  return true;
}

bool boxes_overlap(const Box& a, const Box& b) {
  KEEL_ASSERT(a.offset.size() == b.offset.size(), "boxes of different ranks");
  if (a.numel() == 0 || b.numel() == 0) return false;
  for (size_t d = 0; d < a.offset.size(); ++d)
    if (a.offset[d] >= b.offset[d] + b.count[d] || b.offset[d] >= a.offset[d] + a.count[d])
      return false;
  return true;
}

int64_t boxes_numel(const std::vector<Box>& boxes) {
  int64_t n = 0;
  for (const Box& b : boxes) n += b.numel();
  return n;
}

int64_t flat_index(const Shape& shape, const Shape& index) {
  KEEL_ASSERT(index.size() == shape.size(), "index of ", index.size(), " dims for shape ",
              shape_str(shape));
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + index[d];
  return flat;
}

namespace {

// Appends boxes whose union is the flat elements [begin, end) of the
// sub-tensor at dimensions d.. of `shape` (indices of dimensions < d fixed
// by `prefix`), in flat order: a partial row at each end and a block of
// whole rows between them.
void range_boxes(const Shape& shape, size_t d, Shape& prefix, int64_t begin, int64_t end,
                 std::vector<Box>& out) {
  if (begin >= end) return;
  const size_t nd = shape.size();
  // Dimension d over [start, start + count), the dimensions after it whole.
  auto box = [&](int64_t start, int64_t count) {
    Box b;
    b.offset = prefix;
    b.count = Shape(prefix.size(), 1);
    b.offset.push_back(start);
    b.count.push_back(count);
    for (size_t k = d + 1; k < nd; ++k) {
      b.offset.push_back(0);
      b.count.push_back(shape[k]);
    }
    out.push_back(std::move(b));
  };
  if (d + 1 == nd) return box(begin, end - begin);
  int64_t inner = 1;
  for (size_t k = d + 1; k < nd; ++k) inner *= shape[k];
  int64_t r0 = begin / inner;
  const int64_t r1 = end / inner, head = begin % inner, tail = end % inner;
  auto within = [&](int64_t row, int64_t lo, int64_t hi) {
    prefix.push_back(row);
    range_boxes(shape, d + 1, prefix, lo, hi, out);
    prefix.pop_back();
  };
  if (r0 == r1) return within(r0, head, tail);
  if (head > 0) within(r0++, head, inner);
  if (r1 > r0) box(r0, r1 - r0);
  if (tail > 0) within(r1, 0, tail);
}

}  // namespace

std::vector<Box> flat_range_boxes(const Shape& shape, int64_t begin, int64_t end) {
  const int64_t numel = shape_numel(shape);
  KEEL_CHECK(0 <= begin && begin <= end && end <= numel, "flat_range_boxes: element range [", begin,
             ", ", end, ") does not lie in [0, ", numel, ") (shape ", shape_str(shape), ")");
  std::vector<Box> out;
  if (begin == end) return out;
  if (shape.empty()) return {Box{}};  // a scalar: its one element
  Shape prefix;
  range_boxes(shape, 0, prefix, begin, end, out);
  return out;
}

std::vector<FlatRun> box_runs(const Shape& shape, const std::vector<Box>& boxes) {
  const size_t nd = shape.size();
  Shape strides(nd, 1);  // row-major, in elements
  for (size_t d = nd; d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  std::vector<FlatRun> runs;
  for (size_t i = 0; i < boxes.size(); ++i) {
    const Box& b = boxes[i];
    KEEL_ASSERT(box_in_bounds(b, shape), "box ", box_str(b), " outside ", shape_str(shape));
    if (b.numel() == 0) continue;
    if (nd == 0) {
      runs.push_back({0, 1, i});
      continue;
    }
    // Dimensions after k are whole, so each index of dimensions < k is one run.
    size_t k = nd - 1;
    while (k > 0 && b.count[k] == shape[k]) --k;
    const int64_t length = b.count[k] * strides[k];
    Shape idx(k, 0);  // odometer over dimensions < k
    while (true) {
      int64_t base = b.offset[k] * strides[k];
      for (size_t d = 0; d < k; ++d) base += (b.offset[d] + idx[d]) * strides[d];
      runs.push_back({base, base + length, i});
      size_t d = k;
      while (d > 0 && ++idx[d - 1] == b.count[d - 1]) idx[--d] = 0;
      if (d == 0) break;
    }
  }
  std::sort(runs.begin(), runs.end(),
            [](const FlatRun& a, const FlatRun& b) { return a.begin < b.begin; });
  return runs;
}

std::optional<std::pair<size_t, size_t>> find_overlap(const Shape& shape,
                                                      const std::vector<Box>& boxes) {
  const std::vector<FlatRun> runs = box_runs(shape, boxes);
  // Sorted by begin: a run overlaps an earlier one iff it starts before the
  // furthest end so far.
  size_t furthest = 0;
  for (size_t i = 1; i < runs.size(); ++i) {
    if (runs[i].begin < runs[furthest].end) {
      const size_t a = runs[furthest].box, b = runs[i].box;
      return std::make_pair(std::min(a, b), std::max(a, b));
    }
    if (runs[i].end > runs[furthest].end) furthest = i;
  }
  return std::nullopt;
}

std::string boxes_problem(const Shape& shape, const std::vector<Box>& boxes) {
  using detail::cat;
  for (const Box& b : boxes) {
    if (b.offset.size() != shape.size() || b.count.size() != shape.size())
      return cat("box with ", b.offset.size(), " offsets and ", b.count.size(),
                 " counts does not match the ", shape.size(), " dimensions of shape ",
                 shape_str(shape));
    if (!box_in_bounds(b, shape))
      return cat("box ", box_str(b), " does not lie in shape ", shape_str(shape));
  }
  if (auto pair = find_overlap(shape, boxes))
    return cat("boxes ", box_str(boxes[pair->first]), " and ", box_str(boxes[pair->second]),
               " overlap");
  return "";
}

}  // namespace keel
