// The trainer knows no family: any Workload trains through it. A linear
// regression with its own data source (a position of its own, saved in
// checkpoints) and a named metric learns, logs the metric beside the loss,
// and resumes bit for bit from where its data source was.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "nn/layers.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/temp_dir.h"
#include "trainer/checkpoint.h"
#include "trainer/trainer.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

// Its dropout (on the inputs) has no stream of its own: it draws from the
// process default generator, which the trainer seeds and checkpoints too.
class Affine : public nn::Module {
 public:
  explicit Affine(uint64_t seed) {
    Generator gen(seed);
    w = register_parameter("w", nn::init_normal({4, 1}, 0.5, gen), /*weight_decay=*/true);
    drop = register_module("drop", std::make_shared<nn::Dropout>(0.1));
  }
  Tensor w;
  std::shared_ptr<nn::Dropout> drop;
};

// Batch k: x (8, 4) drawn from Philox at offset k, y = x . (1, -2, 3, 0.5).
class Regression final : public trainer::DataSource {
 public:
  trainer::Batch next() override {
    Generator gen(99);
    gen.set_state(99, uint64_t(k_++));
    Tensor x = randn({8, 4}, gen);                                             // (8, 4)
    Tensor y = keel::matmul(x, from_vector<float>({1, -2, 3, 0.5f}, {4, 1}));  // (8, 1)
    return trainer::Batch{{{"x", x}, {"y", y}}};
  }
  trainer::NamedInts position() const override { return {{"k", k_}}; }
  void set_position(const trainer::NamedInts& p) override {
    ASSERT_EQ(p.size(), 1u);
    ASSERT_EQ(p[0].first, "k");
    k_ = p[0].second;
  }
  int64_t tokens_per_batch() const override { return 8; }

 private:
  int64_t k_ = 0;
};

trainer::Workload regression(uint64_t seed) {
  auto model = std::make_shared<Affine>(seed);
  trainer::Workload w;
  w.module = model;
  w.loss = [model](const trainer::Batch& b) {
    Tensor err = sub(keel::matmul(model->drop->forward(b.at("x")), model->w), b.at("y"));  // (8, 1)
    trainer::LossOutput out{mean(square(err)), {}};
    out.metrics.emplace_back("abs_err", mean(keel::abs(err)).item());
    return out;
  };
  w.data = [](trainer::Split) { return std::make_unique<Regression>(); };
  return w;
}

class WorkloadTest : public ::testing::Test {
 protected:
  void SetUp() override { tmp_ = std::make_unique<testing::TempDir>("workload"); }
  config::Config config(const std::vector<std::string>& sets = {}) const {
    const fs::path d = tmp_->path();
    // The trainer checks its own sections; the shard list is never opened
    // (this workload brings its own data source).
    return trainer::parse_config(
        "data { shards { train_files: 'unused.bin' } batch_size: 8 seq_len: 1 tokenizer: 'byte' }\n"
        "optim { lr: 5e-2 weight_decay: 0 grad_clip: 0 }\n"
        "schedule { decay: 'constant' }\n"
        "train { steps: 60 log_every: 10 seed: 3 }\n"
        "checkpoint { dir: '" +
            (d / "ckpt").string() +
            "' every: 30 keep_last: 4 }\n"
            "logging { dir: '" +
            (d / "logs").string() + "' tensorboard: false }\n",
        "workload test", sets);
  }
  trainer::TrainResult run(const config::Config& cfg, trainer::TrainOptions opt,
                           std::vector<double>* w = nullptr) {
    parallel::ParallelContext ctx;
    trainer::Workload work = regression(7);
    std::ostringstream log;
    opt.out = &log;
    trainer::TrainResult r = trainer::train(cfg, work, ctx, opt);
    if (w) *w = testing::to_doubles(work.module->named_parameters()[0].second);
    return r;
  }
  std::unique_ptr<testing::TempDir> tmp_;
};

TEST_F(WorkloadTest, AnyWorkloadTrainsLogsItsMetricsAndResumesExactly) {
  std::vector<double> straight_w, resumed_w;
  trainer::TrainResult straight = run(config(), {}, &straight_w);
  ASSERT_EQ(straight.losses.size(), 60u);
  // The inputs' dropout leaves a noise floor (measured: the loss falls ~55x).
  EXPECT_LT(straight.losses.back(), 5e-2 * straight.losses.front()) << "the regression did not fit";
  // Adam at a constant lr of 5e-2 still hovers around the optimum after 60
  // steps (measured: 0.11 off); well inside the initial error of ~2.
  EXPECT_NEAR(straight_w[1], -2.0, 0.25);

  // The named metric is logged beside the loss.
  std::ifstream jl(tmp_->path() / "logs" / "metrics.jsonl");
  std::string all((std::istreambuf_iterator<char>(jl)), std::istreambuf_iterator<char>());
  EXPECT_NE(all.find("\"abs_err\""), std::string::npos) << all;

  // The data source's own position is in the checkpoint.
  const std::string ckpt = trainer::checkpoint_path((tmp_->path() / "ckpt").string(), 30);
  bool found = false;
  for (const auto& t : trainer::list_checkpoint(ckpt))
    if (t.name == "/meta/data_k") found = t.value == "30";
  EXPECT_TRUE(found) << "no /meta/data_k = 30 in " << ckpt;

  // Resumed at step 30 from there, in what could be a fresh process (the
  // default generator elsewhere): the same batches and masks, the same losses.
  manual_seed(12345);
  trainer::TrainOptions resume;
  resume.resume = ckpt;
  trainer::TrainResult second =
      run(config({"checkpoint.dir=" + (tmp_->path() / "ckpt2").string()}), resume, &resumed_w);
  EXPECT_EQ(second.start_step, 30);
  ASSERT_EQ(second.losses.size(), 30u);
  for (size_t i = 0; i < 30; ++i) EXPECT_EQ(second.losses[i], straight.losses[30 + i]) << i;
  EXPECT_EQ(resumed_w, straight_w);
}

TEST_F(WorkloadTest, ALayoutOtherThanTheContextsIsRefusedByAxis) {
  EXPECT_KEEL_ERROR(run(config({"parallel.dp=2"}), {}), "parallel.dp is 2", "1 ranks");
}

TEST_F(WorkloadTest, EvaluationNeedsValidationData) {
  parallel::ParallelContext ctx;
  trainer::Workload work = regression(7);
  EXPECT_KEEL_ERROR(trainer::evaluate(config(), work, ctx, 2), "no validation data");
}

}  // namespace
}  // namespace keel
