// Data parallelism: every rank of a data-parallel group holds the whole
// model, runs its own rows of the global batch, and the gradients are
// averaged across the group before the optimizer step.
//
// GradientSync groups the parameters into buckets of about bucket_mb (in
// reverse registration order, the order in which backward finishes them).
// A gradient-ready hook copies each parameter's gradient into its bucket's
// flat f32 buffer; when a bucket's last gradient is in, its all-reduce (Avg)
// starts while backward goes on. finish() waits and copies the averages
// back into the parameters' .grad. In ReduceScatter mode (ZeRO stage 1) the
// gradients go into one flat buffer laid out as FlatLayout says, and
// finish() leaves this rank only its shard of the average (shard_grad()),
// for ShardedAdamW (parallel/zero.h).
//
// The buckets live where the communicator reduces (Communicator::device()):
// on the host with MPI, on the GPU with NCCL, beside the parameters.
//
// Why copies and not .grad views into the buckets: the autograd engine owns
// gradient storage (zero_grad drops it, the next backward allocates it), so
// views would have to be re-installed every step and would silently alias
// the buckets of the next step for anyone holding a gradient; two memcpys
// of the parameter size per step cost little next to backward.
//
// Parallel == serial: with the global batch fixed, rank r gets rows
// [r*B/dp, (r+1)*B/dp) and the averaged gradient is the full-batch gradient
// up to fp32 summation order.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "parallel/communicator.h"

namespace keel::parallel {

// (name, parameter) in registration order; the same type as nn::NamedTensors.
using NamedParams = std::vector<std::pair<std::string, Tensor>>;

// The flat f32 concatenation of parameters (registration order), padded
// with zeros to a multiple of `world` and cut into `world` equal contiguous
// shards: rank r owns flat elements [r*shard, (r+1)*shard).
struct FlatLayout {
  FlatLayout() = default;
  FlatLayout(const NamedParams& params, int world);

  std::vector<int64_t> offset;  // where parameter i starts in the flat buffer
  std::vector<int64_t> numel;
  int64_t total = 0;   // sum of numel
  int64_t padded = 0;  // total rounded up to a multiple of world
  int64_t shard = 0;   // padded / world
  int world = 1;

  // The elements [first, second) of parameter i (row-major, in the
  // parameter's own numbering) that lie in rank `rank`'s shard; empty
  // (first == second) when none do.
  std::pair<int64_t, int64_t> piece(size_t i, int rank) const;
};

enum class GradReduction {
  AllReduce,      // plain data parallelism: every rank gets every averaged gradient
  ReduceScatter,  // ZeRO-1: every rank gets its shard of the averaged flat gradient
};

struct GradientSyncOptions {
  double bucket_mb = 25.0;  // AllReduce bucket size in MiB of f32 gradients
  GradReduction reduction = GradReduction::AllReduce;
};

class GradientSync {
 public:
  // Registers a gradient-ready hook on every parameter (leaves that require
  // grad, contiguous, floating). `comm` must outlive this object. The hooks
  // stay registered after destruction but then do nothing.
  GradientSync(const NamedParams& params, Communicator& comm, GradientSyncOptions options = {});
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // Called before each backward of an optimizer step: true on the last
  // micro-step of gradient accumulation (gradients are reduced as they
  // become final), false on earlier ones (they only accumulate locally).
  void set_sync(bool on);

  // Collective. Completes the step's reduction: buckets whose gradients did
  // not all arrive (a parameter unused on this rank this step) are filled
  // with what the parameters hold (zeros where they hold nothing) and
  // launched in bucket order, so no rank waits on a collective another rank
  // never starts. AllReduce: afterwards every parameter that had a gradient
  // on any rank holds the average over ranks (one that had none locally gets
  // one); a parameter no rank had a gradient for keeps none, as in a serial
  // run. ReduceScatter: see shard_grad() and has_grad().
  void finish();

  // ReduceScatter mode, after finish(): this rank's shard of the averaged
  // flat gradient (layout().shard f32 elements, zero in the padding).
  const Tensor& shard_grad() const;
  // After finish(): whether parameter i had a gradient on any rank.
  bool has_grad(size_t i) const;
  // ReduceScatter mode: the flat f32 gradient buffer (layout().padded
  // elements). Free between finish() and the next backward with
  // set_sync(true), so ShardedAdamW gathers parameters into it.
  Tensor& flat_buffer();

  const FlatLayout& layout() const;
  const NamedParams& params() const;
  Communicator& comm() const;
  GradReduction reduction() const;
  size_t num_buckets() const;  // AllReduce buckets (1 in ReduceScatter mode)

  struct State;

 private:
  std::shared_ptr<State> state_;
};

// Small collectives on host values, identical on every rank (through
// buffers on the communicator's device).

// The sum over ranks of `x`, added in rank order in double: the per-rank
// values travel bit for bit (as int64), so every rank gets the same result.
double sum_across(Communicator& comm, double x);
// `s` from rank `root` on every rank.
void broadcast_string(Communicator& comm, std::string& s, int root = 0);

}  // namespace keel::parallel
