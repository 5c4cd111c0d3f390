#include "nn/tensor_parallel.h"

#include "parallel/collectives.h"
#include "parallel/sequence_parallel_linear.h"

namespace keel::nn {

using parallel::Axis;

ParamSpec tp_spec(const Shape& shape, int64_t dim, parallel::ParallelContext& ctx, bool decay,
                  int64_t stride) {
  ParamSpec s;
  s.decay = decay;
  s.logical = shape;
  s.shard_dim = dim;
  s.axis = Axis::TP;
  s.stride = stride;
  s.shard_rank = ctx.coord().tp;
  s.shard_count = ctx.shape().tp;
  return s;
}

ColumnParallelLinear::ColumnParallelLinear(int64_t in, int64_t out, bool has_bias,
                                           parallel::ParallelContext& ctx, Generator& gen,
                                           double init_std, bool gather_output, int64_t stride,
                                           bool sequence_parallel)
    : tp_(&ctx.device_group({Axis::TP})),
      gather_output_(gather_output),
      sequence_parallel_(sequence_parallel) {
  KEEL_CHECK(in > 0 && out > 0, "ColumnParallelLinear: sizes must be positive, got in=", in,
             " out=", out);
  KEEL_CHECK(out % (stride * ctx.shape().tp) == 0, "ColumnParallelLinear: ", out, " outputs (",
             stride, " segments) do not split over tp = ", ctx.shape().tp);
  KEEL_CHECK(!gather_output || stride == 1,
             "ColumnParallelLinear: gather_output needs stride 1, got ", stride);
  const ParamSpec w = tp_spec({out, in}, 0, ctx, /*decay=*/true, stride);
  weight = register_parameter("weight", init_normal(w, init_std, gen), w);  // (out / tp, in)
  if (has_bias) {
    const ParamSpec b = tp_spec({out}, 0, ctx, false, stride);
    bias = register_parameter("bias", zeros(local_shape(b)), b);  // (out / tp)
  }
}

Tensor ColumnParallelLinear::forward(const Tensor& x) const {
  // Identity forward; backward sums dx over tp (each rank saw its columns).
  // One rank has nothing to sum or gather: tp = 1 is the serial Linear.
  if (tp_->size() == 1) return linear(autocast(x), autocast(weight), autocast(bias));
  // Under sequence parallelism the gather is fused with the product, which
  // keeps only this rank's (B, T / tp, in) slice for backward.
  Tensor y = sequence_parallel_
                 ? parallel::sequence_parallel_linear(autocast(x), autocast(weight), autocast(bias),
                                                      1, *tp_)  // (B, T, out / tp)
                 : linear(autocast(parallel::copy_to_region(x, *tp_)), autocast(weight),
                          autocast(bias));  // (..., out / tp)
  return gather_output_ ? parallel::gather_from_region(y, y.dim() - 1, *tp_) : y;
}

RowParallelLinear::RowParallelLinear(int64_t in, int64_t out, bool has_bias,
                                     parallel::ParallelContext& ctx, Generator& gen,
                                     double init_std, bool input_is_parallel,
                                     bool sequence_parallel)
    : tp_(&ctx.device_group({Axis::TP})),
      input_is_parallel_(input_is_parallel),
      sequence_parallel_(sequence_parallel) {
  KEEL_CHECK(!sequence_parallel || input_is_parallel,
             "RowParallelLinear: sequence parallelism needs input_is_parallel");
  KEEL_CHECK(in > 0 && out > 0, "RowParallelLinear: sizes must be positive, got in=", in,
             " out=", out);
  KEEL_CHECK(in % ctx.shape().tp == 0, "RowParallelLinear: ", in,
             " inputs do not split over tp = ", ctx.shape().tp);
  const ParamSpec w = tp_spec({out, in}, 1, ctx, /*decay=*/true);
  weight = register_parameter("weight", init_normal(w, init_std, gen), w);  // (out, in / tp)
  if (has_bias) bias = register_parameter("bias", zeros({out}));            // (out)
}

Tensor RowParallelLinear::forward(const Tensor& x) const {
  if (tp_->size() == 1) return linear(autocast(x), autocast(weight), autocast(bias));
  Tensor in = input_is_parallel_ ? x : parallel::scatter_to_region(x, x.dim() - 1, *tp_);
  KEEL_CHECK(in.size(-1) == weight.size(1), "RowParallelLinear: expected input (..., ",
             weight.size(1), ") on each of tp = ", tp_->size(), " ranks, got ", in.describe());
  Tensor partial = linear(autocast(in), autocast(weight));  // (..., out), this rank's share
  Tensor y = sequence_parallel_ ? parallel::reduce_scatter_to_region(partial, 1, *tp_)
                                : parallel::reduce_from_region(partial, *tp_);
  if (!bias.defined()) return y;
  // The bias once, after the sum: its gradient is the same on every tp rank,
  // or, on a slice of the sequence, a part of it summed over tp in backward.
  return add(y, autocast(sequence_parallel_ ? parallel::copy_to_region(bias, *tp_) : bias));
}

VocabParallelEmbedding::VocabParallelEmbedding(int64_t num, int64_t dim,
                                               parallel::ParallelContext& ctx, Generator& gen,
                                               double init_std)
    : tp_(&ctx.device_group({Axis::TP})) {
  KEEL_CHECK(num > 0 && dim > 0, "VocabParallelEmbedding: sizes must be positive, got ", num, "x",
             dim);
  KEEL_CHECK(num % ctx.shape().tp == 0, "VocabParallelEmbedding: the vocabulary of ", num,
             " rows does not split over tp = ", ctx.shape().tp, "; pad it to a multiple of tp");
  const ParamSpec w = tp_spec({num, dim}, 0, ctx);
  weight = register_parameter("weight", init_normal(w, init_std, gen), w);  // (num / tp, dim)
  start_ = int64_t(ctx.coord().tp) * (num / ctx.shape().tp);
}

Tensor VocabParallelEmbedding::forward(const Tensor& ids) const {
  // One rank holds every row: the serial Embedding (rows gathered in f32, then cast).
  if (tp_->size() == 1) return autocast(embedding(weight, ids));
  const int64_t rows = weight.size(0), num = rows * tp_->size();
  // Which ids this rank holds, as local rows (0 for the others, masked out
  // below so that row 0 gets no gradient from them).
  const Tensor host = ids.to(Device::cpu()).to(DType::I64).contiguous();  // ids' shape
  Tensor local = empty(host.sizes(), DType::I64);                         // ids' shape
  Tensor keep = empty(host.sizes(), DType::F32);                          // ids' shape
  const int64_t* in = host.data<int64_t>();
  int64_t* lo = local.data<int64_t>();
  float* k = keep.data<float>();
  for (int64_t i = 0; i < host.numel(); ++i) {
    KEEL_CHECK(in[i] >= 0 && in[i] < num, "VocabParallelEmbedding: id ", in[i],
               " is outside the vocabulary [0, ", num, ")");
    const bool mine = in[i] >= start_ && in[i] < start_ + rows;
    lo[i] = mine ? in[i] - start_ : 0;
    k[i] = mine ? 1.0f : 0.0f;
  }
  Tensor rows_out = embedding(weight, local.to(ids.device()));  // (..., dim)
  Tensor masked = mul(rows_out, unsqueeze(keep.to(ids.device()), keep.dim()));
  return autocast(parallel::reduce_from_region(masked, *tp_));
}

}  // namespace keel::nn
