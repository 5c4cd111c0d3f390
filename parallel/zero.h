// ZeRO stage 1: AdamW whose moments are sharded across the data-parallel
// group. The flat concatenation of the parameters (FlatLayout) is cut into
// dp equal contiguous shards; rank r keeps m and v for shard r only (moment
// memory / dp), receives the averaged gradient of that shard by
// reduce-scatter (GradientSync in ReduceScatter mode), updates the
// parameter elements of its shard with the same per-element math as
// kernels::adamw_step (per-parameter weight decay), and the updated
// parameters are all-gathered so every rank again holds the whole model.
#pragma once

#include <string>
#include <vector>

#include "parallel/data_parallel.h"

namespace keel::parallel {

struct ShardedAdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

class ShardedAdamW {
 public:
  // `sync` must be in ReduceScatter mode over the same parameters (in the
  // same order) and outlive this object. `decayed` lists the parameter
  // names that get weight decay.
  ShardedAdamW(GradientSync& sync, const std::vector<std::string>& decayed, ShardedAdamWConfig cfg);

  // Collective, after sync.finish(): the norm of the whole averaged
  // gradient (each rank's shard sum of squares, summed across ranks in rank
  // order), the same on every rank.
  double grad_norm();
  // Collective, after sync.finish(): one AdamW update of this rank's shard
  // with learning rate `lr` and gradients scaled by `grad_scale`, then the
  // all-gather that gives every rank the updated parameters. Parameters no
  // rank had a gradient for are left alone, as AdamW does.
  void step(double lr, double grad_scale = 1.0);

  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }

  // The part of parameter `param` in this rank's shard: its elements
  // [begin, end) (row-major) and the matching views of the local moments.
  // Every parameter has an entry; those outside the shard have begin == end.
  struct Piece {
    size_t param = 0;
    int64_t begin = 0, end = 0;
    Tensor m, v;  // (end - begin) f32 views into the local moment shards
  };
  const std::vector<Piece>& pieces() const { return pieces_; }
  // Elements of optimizer state this rank holds (m and v): 2 * layout().shard.
  int64_t state_numel() const { return m_.numel() + v_.numel(); }
  const NamedParams& params() const { return sync_.params(); }

 private:
  GradientSync& sync_;
  ShardedAdamWConfig cfg_;
  std::vector<bool> decay_;
  Tensor m_, v_;  // (shard) f32 each
  std::vector<Piece> pieces_;
  int64_t step_ = 0;
};

}  // namespace keel::parallel
