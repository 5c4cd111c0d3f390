#include "trainer/optimizer.h"

#include <array>
#include <cmath>

#include "kernels/adamw.h"
#include "parallel/data_parallel.h"
#include "parallel/zero.h"
#include "trainer/optim.h"

namespace keel::trainer {

namespace {

using parallel::Axis;
using parallel::ParallelContext;
constexpr Axis kAxes[] = {Axis::DP, Axis::CP, Axis::EP, Axis::TP};

// The ranks a gradient group averages over (nn/param_spec.h).
std::vector<Axis> group_axes(nn::GradGroup g) {
  if (g == nn::GradGroup::ExpertDataParallel) return {Axis::DP, Axis::CP};
  return {Axis::DP, Axis::CP, Axis::EP};
}

// The ranks that hold the same shard of a tensor laid out as `spec`: every
// axis but the one it is split over.
std::vector<Axis> replica_axes(const nn::ParamSpec& spec) {
  std::vector<Axis> out;
  for (Axis a : kAxes)
    if (!(spec.sharded() && a == spec.axis)) out.push_back(a);
  return out;
}

bool contains(const std::vector<Axis>& axes, Axis a) {
  return std::find(axes.begin(), axes.end(), a) != axes.end();
}

// A tensor laid out as `spec` in a checkpoint: saving, the replicas of its
// shard each write an even share of it; loading, each reads its shard.
TensorPart spec_part(const nn::ParamSpec& spec, const Tensor& local, ParallelContext& ctx,
                     bool saving) {
  if (!saving) return shard_part(spec, local);
  parallel::Communicator& replicas = ctx.host(replica_axes(spec));
  return shard_part(spec, local, replicas.rank(), replicas.size());
}

// Sums of squares by where a parameter's elements live: index 0 for
// replicated ones, 1 + axis for those split over that axis. Summing each
// sharded class across its axis and adding the replicated one counts every
// logical element once.
using NormClasses = std::array<std::vector<Tensor>, 5>;

size_t norm_class(const nn::ParamSpec& spec) { return spec.sharded() ? 1 + size_t(spec.axis) : 0; }

// `partial`: the sums are themselves parts over `group` (ZeRO shards), to be
// summed across it first; null when every rank of the group holds them whole.
double combine(const NormClasses& classes, ParallelContext& ctx, parallel::Communicator* partial) {
  double total = 0;
  for (size_t c = 0; c < classes.size(); ++c) {
    double ss = classes[c].empty() ? 0.0 : kernels::sum_squares_multi(classes[c]);
    if (partial) ss = parallel::sum_across(*partial, ss);
    if (c > 0) {
      parallel::Communicator& across = ctx.host({kAxes[c - 1]});
      if (across.size() > 1) ss = parallel::sum_across(across, ss);
    }
    total += ss;
  }
  return total;
}

// The parameters of each gradient group, in registration order.
struct Group {
  nn::GradGroup kind;
  parallel::NamedParams params;
  std::vector<nn::ParamSpec> specs;
};

std::vector<Group> groups_of(const nn::Module& model) {
  const nn::NamedTensors params = model.named_parameters();
  const auto specs = model.named_parameter_specs();
  std::vector<Group> groups;
  for (nn::GradGroup g : {nn::GradGroup::DataParallel, nn::GradGroup::ExpertDataParallel}) {
    Group group{g, {}, {}};
    for (size_t i = 0; i < params.size(); ++i)
      if (specs[i].second.grad_group == g) {
        group.params.push_back(params[i]);
        group.specs.push_back(specs[i].second);
      }
    if (!group.params.empty()) groups.push_back(std::move(group));
  }
  return groups;
}

parallel::GradientSyncOptions sync_options(const config::Config& cfg,
                                           parallel::GradReduction reduction) {
  parallel::GradientSyncOptions o;
  o.bucket_mb = cfg.parallel().bucket_mb();
  o.reduction = reduction;
  return o;
}

// AdamW with every moment beside its (local) parameter; gradients averaged
// over each group's ranks in buckets during backward.
class ReplicatedAdamW final : public Optimizer {
 public:
  ReplicatedAdamW(const config::Config& cfg, nn::Module& model, ParallelContext& ctx)
      : ctx_(ctx),
        adamw_(model.named_parameters(), model.decayed_parameter_names(),
               AdamWConfig{cfg.optim().lr(), cfg.optim().beta1(), cfg.optim().beta2(),
                           cfg.optim().eps(), cfg.optim().weight_decay()}) {
    for (const auto& [name, spec] : model.named_parameter_specs()) specs_.push_back(spec);
    for (const Group& g : groups_of(model)) {
      parallel::Communicator& comm = ctx.device_group(group_axes(g.kind));
      if (comm.size() > 1)
        syncs_.push_back(std::make_unique<parallel::GradientSync>(
            g.params, comm, sync_options(cfg, parallel::GradReduction::AllReduce)));
    }
  }
  void begin_backward(bool last) override {
    for (auto& s : syncs_) s->set_sync(last);
  }
  void finish_backward() override {
    for (auto& s : syncs_) s->finish();
  }
  // Every rank of a group holds its averaged gradients: only shards differ.
  double grad_norm() override {
    NormClasses classes;
    const nn::NamedTensors& params = adamw_.params();
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].second.grad().defined())
        classes[norm_class(specs_[i])].push_back(params[i].second.grad());
    return std::sqrt(combine(classes, ctx_, nullptr));
  }
  void step(double lr, double grad_scale) override { adamw_.step(lr, grad_scale); }
  int64_t steps_taken() const override { return adamw_.steps_taken(); }
  void set_steps_taken(int64_t s) override { adamw_.set_steps_taken(s); }
  NamedParts state_parts(bool saving) override {
    const nn::NamedTensors state = adamw_.state();  // m and v of parameter i at 2i, 2i + 1
    NamedParts parts;
    for (size_t i = 0; i < state.size(); ++i)
      parts.emplace_back(state[i].first, spec_part(specs_[i / 2], state[i].second, ctx_, saving));
    return parts;
  }

 private:
  ParallelContext& ctx_;
  AdamW adamw_;
  std::vector<nn::ParamSpec> specs_;
  std::vector<std::unique_ptr<parallel::GradientSync>> syncs_;
};

// ZeRO-1: within each gradient group, every rank keeps the moments of its
// shard of the group's flat gradient.
class ZeroAdamW final : public Optimizer {
 public:
  ZeroAdamW(const config::Config& cfg, nn::Module& model, ParallelContext& ctx) : ctx_(ctx) {
    const std::vector<std::string> decayed = model.decayed_parameter_names();
    for (Group& g : groups_of(model)) {
      auto part = std::make_unique<Part>();
      part->axes = group_axes(g.kind);
      part->specs = std::move(g.specs);
      part->sync = std::make_unique<parallel::GradientSync>(
          g.params, ctx.device_group(part->axes),
          sync_options(cfg, parallel::GradReduction::ReduceScatter));
      part->sharded = std::make_unique<parallel::ShardedAdamW>(
          *part->sync, decayed,
          parallel::ShardedAdamWConfig{cfg.optim().beta1(), cfg.optim().beta2(), cfg.optim().eps(),
                                       cfg.optim().weight_decay()});
      parts_.push_back(std::move(part));
    }
  }
  void begin_backward(bool last) override {
    for (auto& p : parts_) p->sync->set_sync(last);
  }
  void finish_backward() override {
    for (auto& p : parts_) p->sync->finish();
  }
  double grad_norm() override {
    double total = 0;
    for (auto& p : parts_) {
      const parallel::FlatLayout& layout = p->sync->layout();
      const int64_t base = int64_t(p->sync->comm().rank()) * layout.shard;
      NormClasses classes;
      for (const auto& piece : p->sharded->pieces()) {
        if (piece.begin == piece.end) continue;
        const int64_t at = layout.offset[piece.param] + piece.begin - base;
        classes[norm_class(p->specs[piece.param])].push_back(
            p->sync->shard_grad().narrow(0, at, piece.end - piece.begin));
      }
      total += combine(classes, ctx_, &ctx_.host(p->axes));
    }
    return std::sqrt(total);
  }
  void step(double lr, double grad_scale) override {
    for (auto& p : parts_) p->sharded->step(lr, grad_scale);
  }
  int64_t steps_taken() const override { return parts_.front()->sharded->steps_taken(); }
  void set_steps_taken(int64_t s) override {
    for (auto& p : parts_) p->sharded->set_steps_taken(s);
  }
  // Each rank's pieces, under AdamW's names. Saving, a piece that ranks
  // outside the group hold alike (tp ranks, for a parameter tp does not
  // split) is written by the first of them only.
  NamedParts state_parts(bool saving) override {
    NamedParts parts;
    for (auto& p : parts_) {
      const parallel::NamedParams& params = p->sharded->params();
      for (const auto& piece : p->sharded->pieces()) {
        const nn::ParamSpec& spec = p->specs[piece.param];
        const bool mine = !saving || first_holder(p->axes, spec);
        const std::string& name = params[piece.param].first;
        for (const auto& [suffix, t] : {std::pair{"/m", piece.m}, {"/v", piece.v}}) {
          std::vector<Box> boxes;
          if (mine) boxes = nn::local_range_boxes(spec, piece.begin, piece.end);
          parts.emplace_back(name + suffix, box_part(spec.logical, DType::F32, std::move(boxes),
                                                     mine ? t : Tensor()));
        }
      }
    }
    return parts;
  }

 private:
  struct Part {
    std::vector<Axis> axes;
    std::vector<nn::ParamSpec> specs;
    std::unique_ptr<parallel::GradientSync> sync;
    std::unique_ptr<parallel::ShardedAdamW> sharded;
  };
  // Whether this rank is the first (coordinate 0) on every axis that is
  // neither the group's nor the one `spec` splits: those ranks hold the same
  // pieces.
  bool first_holder(const std::vector<Axis>& group, const nn::ParamSpec& spec) const {
    for (Axis a : kAxes)
      if (!contains(group, a) && !(spec.sharded() && a == spec.axis) && ctx_.coord()[a] != 0)
        return false;
    return true;
  }
  ParallelContext& ctx_;
  std::vector<std::unique_ptr<Part>> parts_;
};

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const config::Config& cfg, nn::Module& model,
                                          ParallelContext& ctx) {
  // ZeRO over one rank would shard nothing: it is plain AdamW.
  const bool several = ctx.host(group_axes(nn::GradGroup::DataParallel)).size() > 1;
  if (cfg.parallel().zero_stage() == 1 && several && !model.named_parameters().empty())
    return std::make_unique<ZeroAdamW>(cfg, model, ctx);
  return std::make_unique<ReplicatedAdamW>(cfg, model, ctx);
}

NamedParts model_parts(const nn::Module& model, ParallelContext& ctx, bool saving) {
  NamedParts parts;
  const nn::NamedTensors params = model.named_parameters();
  const auto specs = model.named_parameter_specs();
  for (size_t i = 0; i < params.size(); ++i)
    parts.emplace_back(params[i].first, spec_part(specs[i].second, params[i].second, ctx, saving));
  parallel::Communicator& world = ctx.world();
  for (const auto& [name, t] : model.named_buffers())
    parts.emplace_back(name,
                       saving ? replicated_part(t, world.rank(), world.size()) : whole_part(t));
  return parts;
}

}  // namespace keel::trainer
