// GPT-2's MLP: fc (C -> hidden), GELU (tanh approximation), proj (hidden ->
// C), then dropout on the residual branch. fc is column-parallel and proj
// row-parallel over the context's tp group (nn/tensor_parallel.h), so the
// hidden activations never leave their rank; at tp = 1 both are the serial
// Linear.
#pragma once

#include "nn/tensor_parallel.h"

namespace keel::nn {

class MLP : public Module {
 public:
  MLP(int64_t dim, int64_t hidden, bool bias, parallel::ParallelContext& ctx, Generator& gen,
      double init_std, double proj_init_std, double dropout_p = 0.0, const DropoutStreams& rng = {},
      bool sequence_parallel = false);
  // x (B, T, C) -> (B, T, C), the same on every tp rank; sequence parallel:
  // (B, T / tp, C), this rank's slice, in and out.
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<ColumnParallelLinear> fc;  // (hidden / tp, C)
  std::shared_ptr<RowParallelLinear> proj;   // (C, hidden / tp)
  std::shared_ptr<Dropout> resid_dropout;

 private:
  int tp_rank_, tp_;
  bool sequence_parallel_;
};

}  // namespace keel::nn
