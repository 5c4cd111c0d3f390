// Differentiable dropout. The node saves only (p, seed, offset): backward
// regenerates the mask from the Philox stream rather than storing it.
#include "kernels/dropout.h"

#include "autograd/ops.h"

namespace keel {

namespace {
thread_local int64_t t_shard_index = 0;
thread_local int64_t t_shard_count = 1;
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

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  // A bad p is a config error even where dropout is inactive (eval, p = 0).
  KEEL_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p, " for ", x.describe());
  if (!training || p == 0.0) return x;
  const uint64_t seed = gen.seed(), offset = gen.next_offset();
  const uint64_t base = uint64_t(t_shard_index) * uint64_t(x.numel());
  Tensor y = kernels::dropout(x, p, seed, offset, base);
  record("dropout", {x}, {y}, [p, seed, offset, base](BackwardCtx& c) {
    return std::vector<Tensor>{kernels::dropout_backward(c.grad(), p, seed, offset, base)};
  });
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training) {
  return dropout(x, p, training, default_generator());
}

}  // namespace keel
