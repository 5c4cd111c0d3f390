// ParamSpec checks and box arithmetic (see nn/param_spec.h for the layout
// and its order invariant).
#include "nn/param_spec.h"

#include <algorithm>

namespace keel::nn {

using keel::detail::cat;

ParamSpec replicated_spec(const Shape& shape, bool decay) {
  ParamSpec s;
  s.decay = decay;
  s.logical = shape;
  return s;
}

std::string param_spec_problem(const ParamSpec& s) {
  const int64_t nd = int64_t(s.logical.size());
  for (int64_t d : s.logical)
    if (d < 0) return cat("logical shape ", shape_str(s.logical), " has a negative dimension");
  if (s.shard_count < 1) return cat("shard_count must be >= 1, got ", s.shard_count);
  if (s.shard_rank < 0 || s.shard_rank >= s.shard_count)
    return cat("shard_rank ", s.shard_rank, " is not in [0, ", s.shard_count, ")");
  if (s.stride < 1) return cat("stride must be >= 1, got ", s.stride);
  if (s.shard_dim < -1 || s.shard_dim >= nd)
    return cat("shard_dim ", s.shard_dim, " is out of range for logical shape ",
               shape_str(s.logical), " (-1 for replicated, else 0..", nd - 1, ")");
  if (!s.sharded()) return "";
  const int64_t size = s.logical[size_t(s.shard_dim)];
  if (size % s.stride != 0)
    return cat("dim ", s.shard_dim, " of logical shape ", shape_str(s.logical), " has size ", size,
               ", which does not split into stride ", s.stride, " equal segments");
  const int64_t segment = size / s.stride;
  if (segment % s.shard_count != 0)
    return cat("dim ", s.shard_dim, " of logical shape ", shape_str(s.logical), " has ",
               s.stride == 1 ? "size " : "segments of ", segment, ", which does not divide by ",
               parallel::axis_name(s.axis), " shard_count ", s.shard_count);
  return "";
}

std::string describe(const ParamSpec& s) {
  if (!s.sharded()) return cat("logical ", shape_str(s.logical), " replicated");
  return cat("logical ", shape_str(s.logical), " split on dim ", s.shard_dim, " over ",
             parallel::axis_name(s.axis), " (", s.stride > 1 ? cat("stride ", s.stride, ", ") : "",
             "shard ", s.shard_rank, " of ", s.shard_count, ")");
}

namespace {

void check_spec(const ParamSpec& s, const char* op) {
  const std::string problem = param_spec_problem(s);
  KEEL_CHECK(problem.empty(), op, ": ParamSpec (", describe(s), "): ", problem);
}

}  // namespace

Shape local_shape(const ParamSpec& s) {
  check_spec(s, "local_shape");
  Shape out = s.logical;
  if (s.sharded()) out[size_t(s.shard_dim)] /= s.shard_count;
  return out;
}

std::vector<Box> shard_boxes(const ParamSpec& s) {
  return local_range_boxes(s, 0, shape_numel(local_shape(s)));
}

std::vector<Box> local_range_boxes(const ParamSpec& s, int64_t begin, int64_t end) {
  check_spec(s, "local_range_boxes");
  const Shape local = local_shape(s);
  KEEL_CHECK(0 <= begin && begin <= end && end <= shape_numel(local),
             "local_range_boxes: local element range [", begin, ", ", end, ") does not lie in [0, ",
             shape_numel(local), ") of the local shape ", shape_str(local), " (", describe(s), ")");
  std::vector<Box> boxes = flat_range_boxes(local, begin, end);  // local coordinates
  if (!s.sharded()) return boxes;
  // Local index j of the sharded dim is element j % chunk of this rank's
  // chunk of segment j / chunk; a local box crossing segments splits there.
  const size_t d = size_t(s.shard_dim);
  const int64_t segment = s.logical[d] / s.stride, chunk = local[d] / s.stride;
  std::vector<Box> out;
  for (const Box& b : boxes) {
    const int64_t lo = b.offset[d], hi = lo + b.count[d];
    for (int64_t seg = lo / chunk; seg * chunk < hi; ++seg) {
      const int64_t a = std::max(lo, seg * chunk), z = std::min(hi, (seg + 1) * chunk);
      Box piece = b;
      piece.offset[d] = seg * segment + s.shard_rank * chunk + (a - seg * chunk);
      piece.count[d] = z - a;
      out.push_back(std::move(piece));
    }
  }
  return out;
}

}  // namespace keel::nn
