// The training loop: loss falls, resume is exact (bit for bit on CPU),
// configs are refused by field, mismatched checkpoints are refused.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "recipes/recipe.h"
#include "tests/testing/corpus.h"
#include "tests/testing/gradcheck.h"
#include "trainer/checkpoint.h"
#include "trainer/shard.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("keel_trainer_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    testing::write_verse_shards(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string config_text(const std::string& extra = "") const {
    return "model { vocab_size: 256 padded_vocab_size: 256 block_size: 16 n_layer: 2 n_head: 2 "
           "n_embd: 16 dropout: 0.1 }\n"
           "data { train_files: '" + (dir_ / "train.bin").string() + "' val_files: '" +
           (dir_ / "val.bin").string() + "' batch_size: 4 seq_len: 16 tokenizer: 'byte' }\n"
           "optim { lr: 3e-3 }\n"
           "schedule { warmup_steps: 2 decay: 'cosine' }\n"
           "train { steps: 8 grad_accum: 2 log_every: 2 eval_every: 4 eval_batches: 2 seed: 5 }\n"
           "checkpoint { dir: '" + (dir_ / "ckpt").string() + "' every: 4 keep_last: 5 }\n"
           "logging { dir: '" + (dir_ / "logs").string() + "' }\n" + extra;
  }

  trainer::TrainResult run(const config::Config& cfg, const trainer::TrainOptions& opt,
                           nn::NamedTensors* final_state = nullptr) {
    recipes::Recipe r = recipes::make_recipe(cfg, 256);
    std::ostringstream log;
    trainer::TrainOptions o = opt;
    o.out = &log;
    auto res = trainer::train(cfg, *r.module, r.loss, o);
    if (final_state) *final_state = r.module->state_dict();
    return res;
  }

  fs::path dir_;
};

TEST_F(TrainerTest, ResumeIsBitExact) {
  config::Config cfg = trainer::parse_config(config_text(), "test");
  nn::NamedTensors straight_state, resumed_state;
  auto straight = run(cfg, {}, &straight_state);
  ASSERT_EQ(straight.losses.size(), 8u);

  // Same run in two parts: stop after 4 steps (checkpoint), resume to the end.
  config::Config cfg2 = trainer::parse_config(
      config_text(), "test", {"checkpoint.dir=" + (dir_ / "ckpt2").string()});
  trainer::TrainOptions first;
  first.stop_after = 4;
  auto part1 = run(cfg2, first);
  ASSERT_EQ(part1.end_step, 4);
  ASSERT_FALSE(part1.last_checkpoint.empty());
  trainer::TrainOptions second;
  second.resume = "auto";
  auto part2 = run(cfg2, second, &resumed_state);
  EXPECT_EQ(part2.start_step, 4);
  ASSERT_EQ(part2.losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(part1.losses[i], straight.losses[i]) << "step " << i + 1;
    EXPECT_EQ(part2.losses[i], straight.losses[4 + i]) << "step " << 5 + i;  // bit for bit
  }
  ASSERT_EQ(straight_state.size(), resumed_state.size());
  for (size_t i = 0; i < straight_state.size(); ++i)
    EXPECT_EQ(testing::to_doubles(straight_state[i].second),
              testing::to_doubles(resumed_state[i].second))
        << straight_state[i].first;
}

TEST_F(TrainerTest, LossFallsAndMetricsAreWritten) {
  config::Config cfg = trainer::parse_config(
      config_text(), "test", {"train.steps=40", "model.dropout=0", "checkpoint.every=0"});
  auto res = run(cfg, {});
  ASSERT_EQ(res.losses.size(), 40u);
  double first = (res.losses[0] + res.losses[1]) / 2, last = (res.losses[38] + res.losses[39]) / 2;
  EXPECT_LT(last, first - 1.0) << "loss did not fall: " << first << " -> " << last;
  ASSERT_FALSE(res.val_losses.empty());
  EXPECT_LT(res.val_losses.back().second, res.losses[0]);
  EXPECT_TRUE(fs::exists(dir_ / "logs" / "metrics.jsonl"));
  bool tb = false;
  for (auto& e : fs::directory_iterator(dir_ / "logs"))
    tb = tb || e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_TRUE(tb);
  EXPECT_TRUE(trainer::is_complete_checkpoint(res.last_checkpoint));
}

TEST_F(TrainerTest, ResumingIntoADifferentModelIsRefused) {
  config::Config cfg = trainer::parse_config(config_text(), "test", {"train.steps=4"});
  run(cfg, {});
  config::Config wider = trainer::parse_config(config_text(), "test",
                                               {"train.steps=8", "model.n_embd=32"});
  trainer::TrainOptions opt;
  opt.resume = "auto";
  EXPECT_KEEL_ERROR(run(wider, opt), "wte.weight", "(256, 16)", "(256, 32)");
  // The checkpoint the refused run found is still there and loadable.
  EXPECT_TRUE(trainer::is_complete_checkpoint(trainer::latest_checkpoint((dir_ / "ckpt").string())));
}

TEST_F(TrainerTest, ShardsOfAnotherTokenizerAreRefused) {
  config::Config cfg = trainer::parse_config(config_text(), "test", {"data.tokenizer=gpt2"});
  EXPECT_KEEL_ERROR(run(cfg, {}), "tokenizer", "byte", "gpt2");
}

TEST(Config, ParseErrorsNameFileAndLine) {
  EXPECT_KEEL_ERROR(trainer::parse_config("model { n_layer: 2 }\noptim { lrr: 1 }", "cfg.pbtxt"),
                    "cfg.pbtxt:2", "lrr");
  EXPECT_KEEL_ERROR(trainer::parse_config("model { n_layer: 'x' }", "c.pbtxt"), "c.pbtxt:1");
  EXPECT_KEEL_ERROR(trainer::load_config("/nonexistent/keel.pbtxt"), "/nonexistent/keel.pbtxt");
}

TEST(Config, OverridesAreCheckedByField) {
  config::Config c = trainer::parse_config("optim { lr: 1e-3 }", "t", {"optim.lr=3e-4"});
  EXPECT_DOUBLE_EQ(c.optim().lr(), 3e-4);
  c = trainer::parse_config("", "t", {"data.train_files=a.bin,b.bin", "train.device=cpu"});
  ASSERT_EQ(c.data().train_files_size(), 2);
  EXPECT_EQ(c.data().train_files(1), "b.bin");
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"optim.lrr=1"}), "optim.lrr");
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"optim.lr=fast"}), "optim.lr", "fast");
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"optim=1"}), "optim", "section");
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"optim.lr"}), "field=value");
}

TEST_F(TrainerTest, MissingAndBadFieldsAreRefusedByName) {
  auto expect_refused = [&](const std::vector<std::string>& sets, const char* field) {
    config::Config c = trainer::parse_config(config_text(), "t", sets);
    EXPECT_KEEL_ERROR(trainer::validate_config(c), field);
  };
  expect_refused({"optim.lr=-1"}, "optim.lr");
  expect_refused({"optim.beta2=1.5"}, "optim.beta2");
  expect_refused({"schedule.decay=step"}, "schedule.decay");
  expect_refused({"data.seq_len=17"}, "data.seq_len");
  expect_refused({"data.batch_size=3"}, "data.batch_size");
  expect_refused({"model.n_head=3"}, "model.n_embd");
  expect_refused({"parallel.tp=2"}, "parallel");
  expect_refused({"train.grad_accum=0"}, "train.grad_accum");
  expect_refused({"train.device=cuda"}, "train.device");
  config::Config missing = trainer::parse_config("model { n_layer: 1 }", "t");
  EXPECT_KEEL_ERROR(trainer::validate_config(missing), "model.block_size", "missing");
}

}  // namespace
}  // namespace keel
