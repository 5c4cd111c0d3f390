#include "trainer/optimizer.h"

#include "parallel/data_parallel.h"
#include "parallel/zero.h"
#include "trainer/optim.h"

namespace keel::trainer {

namespace {

using parallel::Axis;

// The ranks that hold the same parameters and see other tokens: their
// gradients are averaged.
parallel::Communicator& gradient_group(parallel::ParallelContext& ctx) {
  return ctx.device_group({Axis::DP, Axis::CP, Axis::EP});
}

parallel::GradientSyncOptions sync_options(const config::Config& cfg,
                                           parallel::GradReduction reduction) {
  parallel::GradientSyncOptions o;
  o.bucket_mb = cfg.parallel().bucket_mb();
  o.reduction = reduction;
  return o;
}

// AdamW with every moment whole on every rank.
class ReplicatedAdamW final : public Optimizer {
 public:
  ReplicatedAdamW(const config::Config& cfg, nn::Module& model, parallel::ParallelContext& ctx)
      : ctx_(ctx),
        adamw_(model.named_parameters(), model.decayed_parameter_names(),
               AdamWConfig{cfg.optim().lr(), cfg.optim().beta1(), cfg.optim().beta2(),
                           cfg.optim().eps(), cfg.optim().weight_decay()}) {
    parallel::Communicator& group = gradient_group(ctx);
    if (group.size() > 1)
      sync_ = std::make_unique<parallel::GradientSync>(
          adamw_.params(), group, sync_options(cfg, parallel::GradReduction::AllReduce));
  }
  void begin_backward(bool last) override {
    if (sync_) sync_->set_sync(last);
  }
  void finish_backward() override {
    if (sync_) sync_->finish();
  }
  // Every rank holds the averaged gradients: the local norm is the global one.
  double grad_norm() override { return global_grad_norm(adamw_.params()); }
  void step(double lr, double grad_scale) override { adamw_.step(lr, grad_scale); }
  int64_t steps_taken() const override { return adamw_.steps_taken(); }
  void set_steps_taken(int64_t s) override { adamw_.set_steps_taken(s); }
  NamedParts state_parts(bool saving) override {
    parallel::Communicator& world = ctx_.world();
    NamedParts parts;
    for (const auto& [name, t] : adamw_.state())
      parts.emplace_back(name,
                         saving ? replicated_part(t, world.rank(), world.size()) : whole_part(t));
    return parts;
  }

 private:
  parallel::ParallelContext& ctx_;
  AdamW adamw_;
  std::unique_ptr<parallel::GradientSync> sync_;
};

// ZeRO-1: each rank of the gradient group keeps the moments of its shard.
class ZeroAdamW final : public Optimizer {
 public:
  ZeroAdamW(const config::Config& cfg, nn::Module& model, parallel::ParallelContext& ctx)
      : sync_(model.named_parameters(), gradient_group(ctx),
              sync_options(cfg, parallel::GradReduction::ReduceScatter)),
        sharded_(sync_, model.decayed_parameter_names(),
                 parallel::ShardedAdamWConfig{cfg.optim().beta1(), cfg.optim().beta2(),
                                              cfg.optim().eps(), cfg.optim().weight_decay()}) {}
  void begin_backward(bool last) override { sync_.set_sync(last); }
  void finish_backward() override { sync_.finish(); }
  double grad_norm() override { return sharded_.grad_norm(); }
  void step(double lr, double grad_scale) override { sharded_.step(lr, grad_scale); }
  int64_t steps_taken() const override { return sharded_.steps_taken(); }
  void set_steps_taken(int64_t s) override { sharded_.set_steps_taken(s); }
  // The ranges this rank's shard holds, under AdamW's names.
  NamedParts state_parts(bool) override {
    NamedParts parts;
    const parallel::NamedParams& params = sharded_.params();
    for (const auto& piece : sharded_.pieces()) {
      const auto& [name, p] = params[piece.param];
      parts.emplace_back(name + "/m",
                         range_part(p.sizes(), DType::F32, piece.begin, piece.end, piece.m));
      parts.emplace_back(name + "/v",
                         range_part(p.sizes(), DType::F32, piece.begin, piece.end, piece.v));
    }
    return parts;
  }

 private:
  parallel::GradientSync sync_;
  parallel::ShardedAdamW sharded_;
};

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const config::Config& cfg, nn::Module& model,
                                          parallel::ParallelContext& ctx) {
  // ZeRO over one rank would shard nothing: it is plain AdamW.
  if (cfg.parallel().zero_stage() == 1 && gradient_group(ctx).size() > 1)
    return std::make_unique<ZeroAdamW>(cfg, model, ctx);
  return std::make_unique<ReplicatedAdamW>(cfg, model, ctx);
}

NamedParts model_parts(const nn::Module& model, parallel::ParallelContext& ctx, bool saving) {
  parallel::Communicator& world = ctx.world();
  NamedParts parts;
  for (const auto& [name, t] : model.state_dict())
    parts.emplace_back(name,
                       saving ? replicated_part(t, world.rank(), world.size()) : whole_part(t));
  return parts;
}

}  // namespace keel::trainer
