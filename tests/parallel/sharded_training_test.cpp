// Sharded parameters through the trainer under mpirun (even world sizes):
// a column-parallel regression, its weight split by columns over tp = 2
// (ParamSpec, box-drawn init) and a scale replicated over tp, trained with
// dp = W/2 x tp = 2, plain and ZeRO-1, equals the same workload in one
// process from the same seed: the first step's loss and every gradient
// (each rank's shard against its box of the serial gradient), the gradient
// norm (each logical element counted once), the losses of a whole run, and
// the final weights as the run's layout-free checkpoint holds them; a
// checkpoint saved by the sharded run resumes in one process, and one saved
// by a single process resumes sharded.
//
// Tolerances: sharding changes only fp32 summation order (the loss is a sum
// of per-rank partial sums; the scale's gradient is all-reduced over tp).
// 1e-5 relative, as DESIGN.md's fp32 figure, with 1e-6 absolute for
// elements near zero.
#include <gtest/gtest.h>

#include <sstream>

#include "nn/param_spec.h"
#include "parallel/collectives.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/group_temp_dir.h"
#include "trainer/checkpoint.h"
#include "trainer/optimizer.h"
#include "trainer/trainer.h"

namespace keel {
namespace {

using parallel::Axis;
using testing::all_close;
using testing::to_doubles;

constexpr int64_t kIn = 4, kOut = 6, kRows = 8;
constexpr double kRtol = 1e-5, kAtol = 1e-6;  // fp32 summation order (see top)

// y = (x * s) . W with W (4, 6) split by columns over tp.
class ColumnRegression : public nn::Module {
 public:
  ColumnRegression(parallel::ParallelContext& ctx, uint64_t seed) : tp_(&ctx.host({Axis::TP})) {
    Generator gen(seed);
    nn::ParamSpec w_spec;
    w_spec.decay = true;
    w_spec.logical = {kIn, kOut};
    w_spec.shard_dim = 1;
    w_spec.axis = Axis::TP;
    w_spec.shard_rank = ctx.coord().tp;
    w_spec.shard_count = ctx.shape().tp;
    w = register_parameter("w", nn::init_normal(w_spec, 0.5, gen), w_spec);
    s = register_parameter("s", add_scalar(nn::init_normal({kIn}, 0.1, gen), 1.0));
  }
  // Mean squared error over the whole (rows, 6) output, the same on every tp rank.
  Tensor loss(const Tensor& x, const Tensor& y) const {
    const int64_t cols = kOut / tp_->size();
    Tensor h = parallel::copy_to_region(mul(x, s), *tp_);                   // (rows, 4)
    Tensor err = sub(matmul(h, w), y.narrow(1, tp_->rank() * cols, cols));  // (rows, cols)
    Tensor total = parallel::reduce_from_region(sum(square(err)), *tp_);
    return mul_scalar(total, 1.0 / double(x.size(0) * kOut));
  }
  Tensor w, s;

 private:
  parallel::Communicator* tp_;
};

// Batch k: this data rank's rows of a global (8, 4) x from Philox offset k,
// y = x . W_true.
class Rows final : public trainer::DataSource {
 public:
  Rows(int rank, int world) : rank_(rank), world_(world) {}
  trainer::Batch next() override {
    Generator gen(7);
    gen.set_state(7, uint64_t(k_++));
    Tensor x = randn({kRows, kIn}, gen);  // (8, 4)
    std::vector<float> truth(kIn * kOut);
    for (size_t i = 0; i < truth.size(); ++i) truth[i] = float(i % 5) - 2.0f;
    Tensor y = keel::matmul(x, from_vector<float>(truth, {kIn, kOut}));  // (8, 6)
    const int64_t n = kRows / world_;
    return trainer::Batch{{{"x", x.narrow(0, rank_ * n, n).contiguous()},
                           {"y", y.narrow(0, rank_ * n, n).contiguous()}}};
  }
  trainer::NamedInts position() const override { return {{"k", k_}}; }
  void set_position(const trainer::NamedInts& p) override { k_ = p.at(0).second; }
  int64_t tokens_per_batch() const override { return kRows; }

 private:
  int rank_, world_;
  int64_t k_ = 0;
};

trainer::Workload regression(parallel::ParallelContext& ctx) {
  auto model = std::make_shared<ColumnRegression>(ctx, 11);
  trainer::Workload w;
  w.module = model;
  w.loss = [model](const trainer::Batch& b) {
    return trainer::LossOutput{model->loss(b.at("x"), b.at("y")), {}};
  };
  const int rank = ctx.data_rank(), world = ctx.data_world();
  w.data = [rank, world](trainer::Split) { return std::make_unique<Rows>(rank, world); };
  return w;
}

class ShardedTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = parallel::mpi_world();
    W_ = world_->size();
    if (W_ % 2 != 0) GTEST_SKIP() << "needs an even world (tp = 2)";
    dir_ = std::make_unique<testing::GroupTempDir>(*world_, "sharded");
  }
  config::Config config(const std::string& tag, const std::vector<std::string>& sets) const {
    const auto d = dir_->path() / tag;
    return trainer::parse_config(
        "data { shards { train_files: 'unused.bin' } batch_size: 8 seq_len: 1 }\n"
        "optim { lr: 5e-2 weight_decay: 0.1 grad_clip: 0 }\n"
        "schedule { decay: 'constant' }\n"
        "train { steps: 6 log_every: 3 seed: 3 }\n"
        "checkpoint { dir: '" +
            (d / "ckpt").string() +
            "' every: 3 keep_last: 4 }\n"
            "logging { dir: '" +
            (d / "logs").string() + "' jsonl: false tensorboard: false }\n",
        "sharded test", sets);
  }
  std::vector<std::string> sharded(const char* zero) const {
    return {"parallel.tp=2", "parallel.dp=" + std::to_string(W_ / 2), zero};
  }
  std::unique_ptr<parallel::ParallelContext> mesh() const {
    return std::make_unique<parallel::ParallelContext>(*world_,
                                                       parallel::MeshShape{W_ / 2, 1, 1, 2});
  }

  std::unique_ptr<parallel::Communicator> world_;
  int W_ = 1;
  std::unique_ptr<testing::GroupTempDir> dir_;
};

TEST_F(ShardedTraining, GradientsAndNormOfEveryShardEqualSerial) {
  for (const char* zero : {"parallel.zero_stage=0", "parallel.zero_stage=1"}) {
    SCOPED_TRACE(zero);
    // Serial: the full batch in this process.
    parallel::ParallelContext alone;
    trainer::Workload serial = regression(alone);
    const config::Config one = config("g", {zero});
    auto serial_opt = trainer::make_optimizer(one, *serial.module, alone);
    serial_opt->begin_backward(true);
    const trainer::LossOutput serial_loss = serial.loss(serial.data(trainer::Split::Train)->next());
    serial_loss.loss.backward();
    serial_opt->finish_backward();
    const double serial_norm = serial_opt->grad_norm();

    auto ctx = mesh();
    trainer::Workload par = regression(*ctx);
    auto opt = trainer::make_optimizer(config("g", sharded(zero)), *par.module, *ctx);
    opt->begin_backward(true);
    const trainer::LossOutput loss = par.loss(par.data(trainer::Split::Train)->next());
    loss.loss.backward();
    opt->finish_backward();

    // This data rank's loss is that of its rows; their mean is the serial loss.
    const double mean_loss =
        parallel::sum_across(ctx->host({Axis::DP}), loss.loss.item()) / double(W_ / 2);
    EXPECT_NEAR(mean_loss, serial_loss.loss.item(), kRtol * serial_loss.loss.item());
    EXPECT_NEAR(opt->grad_norm(), serial_norm, kRtol * serial_norm);
    if (std::string(zero).back() == '0') {
      // Plain data parallelism leaves every rank the averaged gradient of its shard.
      const auto& m = dynamic_cast<const ColumnRegression&>(*par.module);
      const auto& sm = dynamic_cast<const ColumnRegression&>(*serial.module);
      const int64_t cols = kOut / 2;
      EXPECT_TRUE(all_close(to_doubles(m.w.grad()),
                            to_doubles(sm.w.grad().narrow(1, ctx->coord().tp * cols, cols)), kRtol,
                            kAtol))
          << "w's shard";
      EXPECT_TRUE(all_close(to_doubles(m.s.grad()), to_doubles(sm.s.grad()), kRtol, kAtol))
          << "s (replicated over tp)";
    }
  }
}

TEST_F(ShardedTraining, RunsEqualSerialAndTheirCheckpointsResumeInOneProcess) {
  for (const char* zero : {"parallel.zero_stage=0", "parallel.zero_stage=1"}) {
    SCOPED_TRACE(zero);
    const std::string tag = std::string("run") + zero[20];
    std::ostringstream log;
    trainer::TrainOptions opt;
    opt.out = &log;

    // Each rank runs the serial workload on its own.
    parallel::ParallelContext alone;
    trainer::Workload serial = regression(alone);
    const auto want = trainer::train(
        config(tag + "_serial_rank" + std::to_string(world_->rank()), {zero}), serial, alone, opt);

    auto ctx = mesh();
    trainer::Workload par = regression(*ctx);
    const auto got = trainer::train(config(tag, sharded(zero)), par, *ctx, opt);
    ASSERT_EQ(got.losses.size(), want.losses.size());
    EXPECT_TRUE(all_close(got.losses, want.losses, kRtol, 0)) << "losses";

    // The sharded run's last checkpoint holds the logical weights: the serial ones.
    trainer::CheckpointData ck;
    Tensor w = zeros({kIn, kOut}), s = zeros({kIn});
    ck.model = {{"w", w}, {"s", s}};
    trainer::load_checkpoint(got.last_checkpoint, ck);
    const auto& sm = dynamic_cast<const ColumnRegression&>(*serial.module);
    EXPECT_TRUE(all_close(to_doubles(w), to_doubles(sm.w), kRtol, kAtol)) << "w";
    EXPECT_TRUE(all_close(to_doubles(s), to_doubles(sm.s), kRtol, kAtol)) << "s";

    // Saved by dp x tp at step 3, resumed by one process: the serial steps 4..6.
    trainer::TrainOptions resume = opt;
    resume.resume = trainer::checkpoint_path((dir_->path() / tag / "ckpt").string(), 3);
    parallel::ParallelContext again;
    trainer::Workload cont = regression(again);
    const auto rest =
        trainer::train(config(tag + "_resumed_rank" + std::to_string(world_->rank()), {zero}), cont,
                       again, resume);
    EXPECT_EQ(rest.start_step, 3);
    const std::vector<double> tail(want.losses.begin() + 3, want.losses.end());
    EXPECT_TRUE(all_close(rest.losses, tail, kRtol, 0)) << "resumed losses";

    // And the other way: rank 0's serial checkpoint at step 3, resumed by
    // dp x tp, continues with the serial losses.
    world_->barrier();  // rank 0's serial run has written it
    trainer::TrainOptions into = opt;
    into.resume =
        trainer::checkpoint_path((dir_->path() / (tag + "_serial_rank0") / "ckpt").string(), 3);
    auto ctx2 = mesh();
    trainer::Workload sharded_again = regression(*ctx2);
    const auto split =
        trainer::train(config(tag + "_into", sharded(zero)), sharded_again, *ctx2, into);
    EXPECT_EQ(split.start_step, 3);
    EXPECT_TRUE(all_close(split.losses, tail, kRtol, 0)) << "losses resumed into dp x tp";
    world_->barrier();
  }
}

}  // namespace
}  // namespace keel
