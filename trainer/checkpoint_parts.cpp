// The descriptions of what one rank saves or loads of a tensor (TensorPart,
// trainer/checkpoint.h): whole, an even flat share, a flat range, boxes, a
// parameter's shard. No HDF5 here: a bad argument is recorded in the part's
// `problem`, which the collective save or load reports on every rank.
#include "nn/param_spec.h"
#include "trainer/checkpoint.h"

namespace keel::trainer {

TensorPart whole_part(const Tensor& t) {
  TensorPart p;
  p.local = t;
  if (!t.defined()) {
    p.problem = "is an undefined tensor";
    return p;
  }
  p.shape = t.sizes();
  p.dtype = t.dtype();
  p.boxes = flat_range_boxes(p.shape, 0, t.numel());
  return p;
}

TensorPart replicated_part(const Tensor& t, int rank, int world) {
  KEEL_CHECK(t.defined(), "replicated_part: undefined tensor");
  KEEL_CHECK(world >= 1 && rank >= 0 && rank < world, "replicated_part: rank ", rank,
             " is not in a world of ", world);
  const int64_t n = t.numel();
  const int64_t lo = n * rank / world, hi = n * (rank + 1) / world;
  return range_part(t.sizes(), t.dtype(), lo, hi,
                    t.contiguous().reshape({n}).narrow(0, lo, hi - lo));
}

TensorPart range_part(const Shape& shape, DType dtype, int64_t begin, int64_t end,
                      const Tensor& local) {
  TensorPart p;
  p.shape = shape;
  p.dtype = dtype;
  p.local = local;
  const int64_t numel = shape_numel(shape);
  if (0 <= begin && begin <= end && end <= numel)
    p.boxes = flat_range_boxes(shape, begin, end);
  else
    p.problem = keel::detail::cat("element range [", begin, ", ", end, ") does not lie in [0, ",
                                  numel, ") (shape ", shape_str(shape), ")");
  return p;
}

TensorPart box_part(const Shape& shape, DType dtype, std::vector<Box> boxes, const Tensor& local) {
  TensorPart p;
  p.shape = shape;
  p.dtype = dtype;
  p.boxes = std::move(boxes);
  p.local = local;
  return p;
}

TensorPart shard_part(const nn::ParamSpec& spec, const Tensor& local, int replica, int replicas) {
  using keel::detail::cat;
  TensorPart p;
  p.local = local;
  if (!local.defined()) {
    p.problem = "is an undefined tensor";
    return p;
  }
  nn::ParamSpec s = spec;
  if (s.logical.empty() && !s.sharded()) s.logical = local.sizes();
  p.shape = s.logical;
  p.dtype = local.dtype();
  if (std::string bad = nn::param_spec_problem(s); !bad.empty()) {
    p.problem = cat("has an inconsistent ParamSpec (", nn::describe(s), "): ", bad);
    return p;
  }
  const Shape want = nn::local_shape(s);
  if (local.sizes() != want) {
    p.problem = cat("local tensor ", local.describe(), " is not the local shape ", shape_str(want),
                    " of its ParamSpec (", nn::describe(s), ")");
    return p;
  }
  if (replicas < 1 || replica < 0 || replica >= replicas) {
    p.problem = cat("replica ", replica, " is not in a group of ", replicas);
    return p;
  }
  if (replicas == 1) {  // the whole shard, `local` itself (loads write through it)
    p.boxes = nn::shard_boxes(s);
    return p;
  }
  const int64_t n = local.numel(), lo = n * replica / replicas, hi = n * (replica + 1) / replicas;
  p.boxes = nn::local_range_boxes(s, lo, hi);
  p.local = local.contiguous().reshape({n}).narrow(0, lo, hi - lo);
  return p;
}

}  // namespace keel::trainer
