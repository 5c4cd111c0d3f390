// GPT under tensor parallelism, with and without sequence parallelism
// (mpirun; tp = the world, and tp = 2 x dp at even worlds above 2) against
// the same GPT in one process from the same
// seed: a tiny model with dropout 0.1 at all four sites, the byte
// vocabulary of 256 padded to 384 (at tp = 4 one shard is part padding and
// one all padding), grad_accum 2.
//   - The first micro-batch: the loss, and every parameter's gradient (each
//     rank's shard against its box of the serial gradient).
//   - Ten AdamW steps through train(), plain and ZeRO-1: the losses, and the
//     final weights as the run's layout-free checkpoint holds them.
//
// Tolerances: sharding changes only f32 summation order (matmuls over fewer
// columns, partial sums all-reduced, the vocabulary's exp-sums added across
// ranks); 1e-5 relative (DESIGN.md's fp32 figure), 1e-6 absolute for
// gradient elements near zero, and 1e-5 for weights after ten steps (an
// AdamW update magnifies the rounding of tiny gradients).
#include <gtest/gtest.h>

#include <sstream>

#include "nn/param_spec.h"
#include "recipes/gpt/gpt.h"
#include "recipes/recipe.h"
#include "tests/testing/corpus.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/group_temp_dir.h"
#include "trainer/checkpoint.h"
#include "trainer/optimizer.h"
#include "trainer/trainer.h"

namespace keel {
namespace {

using parallel::MeshShape;
using testing::all_close;
using testing::to_doubles;

constexpr double kRtol = 1e-5, kGradAtol = 1e-6, kParamAtol = 1e-5;  // see top

// This rank's part of the logical tensor `full` as `spec` lays it out.
Tensor box_of(const Tensor& full, const nn::ParamSpec& spec) {
  std::vector<Tensor> parts;
  for (const Box& b : nn::shard_boxes(spec)) {
    Tensor t = full;
    for (size_t d = 0; d < b.offset.size(); ++d) t = t.narrow(int64_t(d), b.offset[d], b.count[d]);
    parts.push_back(t.contiguous());
  }
  return parts.size() == 1 ? parts[0] : concat(parts, spec.shard_dim);
}

class GptTensorParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = parallel::mpi_world();
    W_ = world_->size();
    if (W_ < 2) GTEST_SKIP() << "needs mpirun -np 2 or more";
    dir_ = std::make_unique<testing::GroupTempDir>(*world_, "gpt_tp");
    if (world_->rank() == 0) testing::write_verse_shards(dir_->path());
    world_->barrier();
  }
  std::vector<MeshShape> layouts() const {
    std::vector<MeshShape> out;
    if (4 % W_ == 0) out.push_back(MeshShape{1, 1, 1, W_});  // 4 heads: tp 2 or 4
    if (W_ > 2 && W_ % 2 == 0) out.push_back(MeshShape{W_ / 2, 1, 1, 2});
    return out;
  }
  config::Config config(const std::string& tag, const MeshShape& shape,
                        const std::vector<std::string>& sets = {}) const {
    const auto d = dir_->path();
    std::string text =
        "model { gpt { vocab_size: 256 padded_vocab_size: 384 block_size: 16 n_layer: 2 "
        "n_head: 4 n_embd: 16 dropout: 0.1 } }\n"
        "data { shards { train_files: '" +
        (d / "train.bin").string() +
        "' } "
        "batch_size: 8 seq_len: 16 tokenizer: 'byte' }\n"
        "optim { lr: 3e-3 grad_clip: 1.0 }\n"
        "schedule { warmup_steps: 2 decay: 'cosine' }\n"
        "train { steps: 10 grad_accum: 2 log_every: 5 seed: 5 }\n"
        "parallel { dp: " +
        std::to_string(shape.dp) + " tp: " + std::to_string(shape.tp) +
        " }\n"
        "checkpoint { dir: '" +
        (d / tag / "ckpt").string() +
        "' every: 0 }\n"
        "logging { dir: '" +
        (d / tag / "logs").string() + "' jsonl: false tensorboard: false }\n";
    return trainer::parse_config(text, "gpt tp test", sets);
  }

  std::unique_ptr<parallel::Communicator> world_;
  int W_ = 1;
  std::unique_ptr<testing::GroupTempDir> dir_;
};

TEST_F(GptTensorParallel, FirstBatchLossAndEveryGradientEqualSerial) {
  for (const MeshShape& shape : layouts())
    for (const char* sp : {"parallel.sequence_parallel=false", "parallel.sequence_parallel=true"}) {
      SCOPED_TRACE(shape.str() + " " + sp);
      parallel::ParallelContext alone;
      const config::Config one = config("g", MeshShape{});
      recipes::Recipe serial = recipes::make_recipe(one, alone);
      serial.module->train();
      alone.seed(5);
      auto serial_opt = trainer::make_optimizer(one, *serial.module, alone);
      std::unique_ptr<trainer::DataSource> all = serial.data(trainer::Split::Train);
      serial_opt->begin_backward(true);
      const Tensor serial_loss = serial.loss(all->next()).loss;
      serial_loss.backward();
      serial_opt->finish_backward();

      parallel::ParallelContext ctx(*world_, shape);
      const config::Config cfg = config("g", shape, {sp});
      recipes::Recipe par = recipes::make_recipe(cfg, ctx);
      par.module->train();
      ctx.seed(5);
      auto opt = trainer::make_optimizer(cfg, *par.module, ctx);
      std::unique_ptr<trainer::DataSource> mine = par.data(trainer::Split::Train);
      DropoutShardGuard rows(ctx.data_rank(), ctx.data_world());
      opt->begin_backward(true);
      const Tensor loss = par.loss(mine->next()).loss;
      loss.backward();
      opt->finish_backward();

      const double mean =
          parallel::sum_across(ctx.host({parallel::Axis::DP}), loss.item()) / double(shape.dp);
      EXPECT_NEAR(mean, serial_loss.item(), kRtol * serial_loss.item()) << "loss";
      EXPECT_NEAR(opt->grad_norm(), serial_opt->grad_norm(), kRtol * serial_opt->grad_norm())
          << "gradient norm";
      const nn::NamedTensors want = serial.module->named_parameters();
      const nn::NamedTensors got = par.module->named_parameters();
      const auto specs = par.module->named_parameter_specs();
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i].first, want[i].first);
        ASSERT_TRUE(got[i].second.grad().defined()) << got[i].first;
        EXPECT_TRUE(all_close(to_doubles(got[i].second.grad()),
                              to_doubles(box_of(want[i].second.grad(), specs[i].second)), kRtol,
                              kGradAtol))
            << got[i].first << " (" << nn::describe(specs[i].second) << ")";
      }
    }
}

TEST_F(GptTensorParallel, TenStepsEqualSerialPlainAndZero) {
  for (const MeshShape& shape : layouts())
    for (const char* zero : {"parallel.zero_stage=0", "parallel.zero_stage=1"}) {
      // Sequence parallelism with ZeRO, plain data parallelism without.
      const char* sp =
          zero[20] == '1' ? "parallel.sequence_parallel=true" : "parallel.sequence_parallel=false";
      SCOPED_TRACE(shape.str() + " " + zero + " " + sp);
      const std::string tag = "run" + std::to_string(shape.tp) + zero[20];
      std::ostringstream log;
      trainer::TrainOptions opt;
      opt.out = &log;
      parallel::ParallelContext alone;
      recipes::Recipe serial = recipes::make_recipe(config(tag + "s", MeshShape{}), alone);
      const auto want =
          trainer::train(config(tag + "s" + std::to_string(world_->rank()), MeshShape{}, {zero}),
                         serial, alone, opt);

      parallel::ParallelContext ctx(*world_, shape);
      const config::Config cfg = config(tag, shape, {zero, sp});
      recipes::Recipe par = recipes::make_recipe(cfg, ctx);
      const auto got = trainer::train(cfg, par, ctx, opt);
      ASSERT_EQ(got.losses.size(), 10u);
      EXPECT_TRUE(all_close(got.losses, want.losses, kRtol, 0)) << "losses";

      // The checkpoint of the sharded run holds the serial run's weights.
      trainer::CheckpointData ck;
      ck.model = serial.module->state_dict();
      std::vector<Tensor> saved;
      for (auto& [name, t] : ck.model) {
        saved.push_back(t.clone());
        t = zeros(t.sizes());
      }
      trainer::load_checkpoint(got.last_checkpoint, ck);
      for (size_t i = 0; i < ck.model.size(); ++i)
        EXPECT_TRUE(
            all_close(to_doubles(ck.model[i].second), to_doubles(saved[i]), kRtol, kParamAtol))
            << ck.model[i].first;
      world_->barrier();
    }
}

// Saved at tp = 2 x dp = 2 after 5 of 10 steps; resumed at tp = 4, at
// tp = 1 x dp = 4 and in one process: each continues with the losses of the
// run that never stopped.
TEST_F(GptTensorParallel, CheckpointsReshardAcrossLayouts) {
  if (W_ != 4) GTEST_SKIP() << "runs at np 4";
  std::ostringstream log;
  trainer::TrainOptions opt;
  opt.out = &log;
  const MeshShape saved{2, 1, 1, 2};
  parallel::ParallelContext ctx(*world_, saved);
  recipes::Recipe straight_model = recipes::make_recipe(config("rs_straight", saved), ctx);
  const auto straight = trainer::train(config("rs_straight", saved), straight_model, ctx, opt);
  trainer::TrainOptions first = opt;
  first.stop_after = 5;
  recipes::Recipe part_model = recipes::make_recipe(config("rs_saved", saved), ctx);
  const auto part = trainer::train(config("rs_saved", saved), part_model, ctx, first);
  ASSERT_EQ(part.end_step, 5);
  const std::vector<double> rest(straight.losses.begin() + 5, straight.losses.end());

  trainer::TrainOptions resume = opt;
  resume.resume = part.last_checkpoint;
  for (const MeshShape& shape : {MeshShape{1, 1, 1, 4}, MeshShape{4, 1, 1, 1}}) {
    SCOPED_TRACE("resumed at " + shape.str());
    parallel::ParallelContext other(*world_, shape);
    const config::Config cfg = config("rs_" + std::to_string(shape.tp), shape);
    recipes::Recipe m = recipes::make_recipe(cfg, other);
    const auto got = trainer::train(cfg, m, other, resume);
    EXPECT_EQ(got.start_step, 5);
    EXPECT_TRUE(all_close(got.losses, rest, kRtol, 0)) << "losses";
  }
  parallel::ParallelContext alone;
  const config::Config one = config("rs_alone" + std::to_string(world_->rank()), MeshShape{});
  recipes::Recipe m = recipes::make_recipe(one, alone);
  const auto got = trainer::train(one, m, alone, resume);
  EXPECT_EQ(got.start_step, 5);
  EXPECT_TRUE(all_close(got.losses, rest, kRtol, 0)) << "losses resumed in one process";
  world_->barrier();
}

TEST_F(GptTensorParallel, LayoutsTheModelCannotSplitAreRefusedByField) {
  if (W_ != 2) GTEST_SKIP() << "checked at np 2";
  parallel::ParallelContext ctx(*world_, MeshShape{1, 1, 1, 2});
  config::Config odd = config("bad", MeshShape{1, 1, 1, 2});
  odd.mutable_model()->mutable_gpt()->set_n_head(1);
  odd.mutable_model()->mutable_gpt()->set_n_embd(16);
  EXPECT_KEEL_ERROR(recipes::make_recipe(odd, ctx), "model.gpt.n_head", "parallel.tp");
  config::Config vocab = config("bad", MeshShape{1, 1, 1, 2});
  vocab.mutable_model()->mutable_gpt()->set_padded_vocab_size(257);
  EXPECT_KEEL_ERROR(recipes::make_recipe(vocab, ctx), "model.gpt.padded_vocab_size", "257",
                    "parallel.tp");
}

}  // namespace
}  // namespace keel
