// Differentiable dropout. The node saves only (p, seed, offset, box):
// backward regenerates the mask from the Philox stream rather than storing
// it. The thread's DropoutShardGuard places x (and its box) on dim 0 of the
// data-parallel batch.
#include "kernels/dropout.h"

#include "autograd/ops.h"

namespace keel {

namespace {
thread_local int64_t t_shard_index = 0;
thread_local int64_t t_shard_count = 1;

// The box of x in the serial (all data-parallel ranks') tensor: `box` is
// x's place in this rank's tensor (empty: all of it), and this rank's
// tensor is shard t_shard_index of t_shard_count along dim 0.
DropoutBox with_batch_shard(const Tensor& x, const DropoutBox& box) {
  if (t_shard_count == 1) return box;
  DropoutBox b = box;
  if (b.logical.empty() && b.start.empty()) {
    b.logical = x.sizes();
    b.start.assign(x.sizes().size(), 0);
  }
  // A 0-d x has no dim 0; a malformed box is refused by the launcher.
  if (b.logical.empty() || b.start.size() != b.logical.size()) return b;
  b.start[0] += t_shard_index * b.logical[0];
  b.logical[0] *= t_shard_count;
  return b;
}
}  // namespace

DropoutShardGuard::DropoutShardGuard(int64_t index, int64_t count)
    : prev_index_(t_shard_index), prev_count_(t_shard_count) {
  KEEL_CHECK(count >= 1 && index >= 0 && index < count, "DropoutShardGuard: shard ", index,
             " of ", count, " is out of range");
  t_shard_index = index;
  t_shard_count = count;
}

DropoutShardGuard::~DropoutShardGuard() {
  t_shard_index = prev_index_;
  t_shard_count = prev_count_;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen, const DropoutBox& box) {
  // A bad p is a config error even where dropout is inactive (eval, p = 0).
  KEEL_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p, " for ", x.describe());
  if (!training || p == 0.0) return x;
  const uint64_t seed = gen.seed(), offset = gen.next_offset();
  // Under a guard a 0-d x is element `index` of a (count) vector: it is
  // drawn as a (1) view, which has the dim 0 the guard shards.
  const bool as_vector =
      x.dim() == 0 && t_shard_count > 1 && box.logical.empty() && box.start.empty();
  auto vec = [as_vector](const Tensor& t) { return as_vector ? t.reshape({1}) : t; };
  const DropoutBox b = with_batch_shard(vec(x), box);
  Tensor y = kernels::dropout(vec(x), p, seed, offset, b).reshape(x.sizes());  // x's shape
  record("dropout", {x}, {y}, [p, seed, offset, b, vec](BackwardCtx& c) {
    const Tensor& dy = c.grad();
    return std::vector<Tensor>{
        kernels::dropout_backward(vec(dy), p, seed, offset, b).reshape(dy.sizes())};
  });
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  return dropout(x, p, training, gen, DropoutBox{});
}

Tensor dropout(const Tensor& x, double p, bool training) {
  return dropout(x, p, training, default_generator(), DropoutBox{});
}

}  // namespace keel
