// The training loop: loss falls, resume is exact (bit for bit on CPU),
// configs are refused by field, mismatched checkpoints are refused.
#include "trainer/trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>

#include "recipes/recipe.h"
#include "tests/testing/corpus.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/temp_dir.h"
#include "trainer/checkpoint.h"
#include "trainer/optim.h"
#include "trainer/shard.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public ::testing::Test {
 public:
  void SetUp() override {
    tmp_ = std::make_unique<testing::TempDir>("trainer");
    dir_ = tmp_->path();
    testing::write_verse_shards(dir_);
  }

  std::string config_text(const std::string& extra = "") const {
    return "model { " + model_section_ +
           " }\n"
           "data { shards { train_files: '" +
           (dir_ / "train.bin").string() + "' val_files: '" + (dir_ / "val.bin").string() +
           "' } batch_size: 4 seq_len: 16 tokenizer: 'byte' }\n"
           "optim { lr: 3e-3 }\n"
           "schedule { warmup_steps: 2 decay: 'cosine' }\n"
           "train { steps: 8 grad_accum: 2 log_every: 2 eval_every: 4 eval_batches: 2 seed: 5 }\n"
           "checkpoint { dir: '" +
           (dir_ / "ckpt").string() +
           "' every: 4 keep_last: 5 }\n"
           "logging { dir: '" +
           (dir_ / "logs").string() + "' }\n" + extra;
  }

  trainer::TrainResult run(const config::Config& cfg, const trainer::TrainOptions& opt,
                           nn::NamedTensors* final_state = nullptr) {
    parallel::ParallelContext ctx;
    recipes::Recipe r = recipes::make_recipe(cfg, ctx);
    std::ostringstream log;
    trainer::TrainOptions o = opt;
    o.out = &log;
    auto res = trainer::train(cfg, r, ctx, o);
    if (final_state) *final_state = r.module->state_dict();
    return res;
  }

  // The config with `sets` applied is refused by validation with a message
  // naming `field` (and containing `why`).
  void expect_refused(const std::vector<std::string>& sets, const char* field,
                      const char* why = "") const {
    config::Config c = trainer::parse_config(config_text(), "t", sets);
    EXPECT_KEEL_ERROR(recipes::validate_config(c), field, why);
  }

  std::unique_ptr<testing::TempDir> tmp_;
  fs::path dir_;
  // The family section of the config: a tiny GPT unless a test says otherwise.
  std::string model_section_ =
      "gpt { vocab_size: 256 padded_vocab_size: 256 block_size: 16 n_layer: 2 n_head: 2 n_embd: "
      "16 dropout: 0.1 }";
};

// A tiny order-3 Hyena LM with every kind of dropout on (the streams', the
// residual branches', the filter taps').
const char* const kHyenaSection =
    "hyena { vocab_size: 256 padded_vocab_size: 256 block_size: 16 n_layer: 2 n_embd: 16 "
    "dropout: 0.1 filter_dropout: 0.1 order: 3 filter_order: 8 emb_dim: 5 }";

// A tiny Mamba LM (inner width 24 from expand 1.5, state 4).
const char* const kMambaSection =
    "mamba { vocab_size: 256 padded_vocab_size: 256 n_layer: 2 n_embd: 16 d_state: 4 "
    "expand: 1.5 }";

// Training twice to step 8, straight and as 4 + resume + 4, gives the same
// losses and weights bit for bit under `sets` (a precision, say).
void expect_exact_resume(TrainerTest& t, const std::vector<std::string>& sets);

TEST(LossScaler, HalvesOnOverflowAndDoublesAfterACleanWindow) {
  trainer::LossScaler s({0, 1024, 3, 256});
  EXPECT_EQ(s.scale(), 1024);
  EXPECT_FALSE(s.update(false));  // overflow: skip, halve
  EXPECT_EQ(s.scale(), 512);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 512);
  EXPECT_TRUE(s.update(true));  // third clean step in a row: double
  EXPECT_EQ(s.scale(), 1024);
  EXPECT_EQ(s.clean_steps(), 0);
  EXPECT_TRUE(s.update(true));
  EXPECT_FALSE(s.update(false));  // an overflow restarts the window
  EXPECT_EQ(s.clean_steps(), 0);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), 256);  // floor: min_scale
  s.set_state(4096, 2);
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 8192);
  EXPECT_KEEL_ERROR(s.set_state(-1, 0), "LossScaler");
  EXPECT_KEEL_ERROR(trainer::LossScaler({0, 1024, 0, 1}), "LossScaler", "window 0");
}

TEST(LossScaler, StaticScaleNeverSkips) {
  trainer::LossScaler s({128, 65536, 1000, 1});
  EXPECT_EQ(s.scale(), 128);
  EXPECT_TRUE(s.update(false));
  EXPECT_EQ(s.scale(), 128);
  s.set_state(4, 0);  // a dynamic run's saved scale does not override the static one
  EXPECT_EQ(s.scale(), 128);
}

TEST_F(TrainerTest, Bf16StartsWhereFp32DoesAndLearns) {
  const std::vector<std::string> sets = {"train.steps=40", "model.gpt.dropout=0",
                                         "checkpoint.every=0", "train.eval_every=0"};
  auto with = [&](const char* precision) {
    std::vector<std::string> s = sets;
    s.push_back(std::string("train.precision=") + precision);
    return run(trainer::parse_config(config_text(), "test", s), {});
  };
  auto fp32 = with("fp32"), bf16 = with("bf16");
  ASSERT_EQ(bf16.losses.size(), 40u);
  // The first loss is that of the same initial weights; bf16 rounds the
  // weights, activations and logits to 8 significant bits (2^-9 relative
  // each), which moves a mean cross-entropy near ln(256) by far less than 1%.
  EXPECT_NEAR(bf16.losses[0], fp32.losses[0], 1e-2 * fp32.losses[0]);
  EXPECT_NE(bf16.losses[0], fp32.losses[0]);  // it did compute in bf16
  const double first = (bf16.losses[0] + bf16.losses[1]) / 2;
  const double last = (bf16.losses[38] + bf16.losses[39]) / 2;
  EXPECT_LT(last, first - 1.0) << "bf16 loss did not fall: " << first << " -> " << last;
  // And it tracks the fp32 run: after 40 steps within 5% of its loss.
  EXPECT_NEAR(last, (fp32.losses[38] + fp32.losses[39]) / 2, 0.05 * last);
}

TEST_F(TrainerTest, Fp16SkipsOverflowingStepsAndLearns) {
  // Scale 2^24 overflows f16 gradients (max 65504) at once (this model's
  // fit from about 2^18); the scaler must halve it, skipping those steps,
  // until they fit, then train normally.
  config::Config cfg =
      trainer::parse_config(config_text(), "test",
                            {"train.steps=40", "model.gpt.dropout=0", "checkpoint.every=0",
                             "train.eval_every=0", "train.precision=fp16",
                             "train.initial_loss_scale=16777216", "train.loss_scale_window=1000"});
  auto res = run(cfg, {});
  ASSERT_EQ(res.losses.size(), 40u);
  EXPECT_GE(res.skipped_steps, 1);
  EXPECT_LE(res.skipped_steps, 8);
  for (double l : res.losses) EXPECT_TRUE(std::isfinite(l));
  const double first = res.losses[0], last = (res.losses[38] + res.losses[39]) / 2;
  EXPECT_LT(last, first - 1.0) << "fp16 loss did not fall: " << first << " -> " << last;
  // The metrics record the scale.
  std::ifstream jl(dir_ / "logs" / "metrics.jsonl");
  std::string all((std::istreambuf_iterator<char>(jl)), std::istreambuf_iterator<char>());
  EXPECT_NE(all.find("\"loss_scale\""), std::string::npos);
}

TEST_F(TrainerTest, Bf16ResumeIsBitExact) { expect_exact_resume(*this, {"train.precision=bf16"}); }

TEST_F(TrainerTest, Fp16ResumeIsBitExactAcrossScaleChanges) {
  // Overflows (and scale halvings) happen before and after the stop at step
  // 4, and the window of 3 doubles the scale in between: the resumed run
  // must pick up the scale and the clean-step count exactly.
  expect_exact_resume(*this, {"train.precision=fp16", "train.initial_loss_scale=16777216",
                              "train.loss_scale_window=3"});
}

TEST_F(TrainerTest, Fp16ResumedFromAnFp32CheckpointStartsAtTheInitialScale) {
  // An fp32 checkpoint carries no loss-scaler state (its saved scale is 1):
  // continuing it in fp16 must start at train.initial_loss_scale, which at
  // 2^24 overflows at once, not at 1, where f16 gradients would underflow.
  config::Config fp32 = trainer::parse_config(config_text(), "test", {"model.gpt.dropout=0"});
  trainer::TrainOptions first;
  first.stop_after = 4;
  ASSERT_FALSE(run(fp32, first).last_checkpoint.empty());
  config::Config fp16 = trainer::parse_config(
      config_text(), "test",
      {"model.gpt.dropout=0", "train.precision=fp16", "train.initial_loss_scale=16777216"});
  trainer::TrainOptions second;
  second.resume = "auto";
  auto res = run(fp16, second);
  EXPECT_EQ(res.start_step, 4);
  EXPECT_GE(res.skipped_steps, 1);
}

TEST(TrainingDevice, NamesAreResolvedOrRefused) {
  EXPECT_EQ(trainer::training_device("cpu"), Device::cpu());
  EXPECT_KEEL_ERROR(trainer::training_device("tpu"), "train.device", "tpu");
  // Malformed indices are refused as names, whether or not there is a GPU.
  EXPECT_KEEL_ERROR(trainer::training_device("cuda:x"), "cuda:x", "is not cpu, cuda or cuda:N");
  EXPECT_KEEL_ERROR(trainer::training_device("cuda:"), "is not cpu, cuda or cuda:N");
  if (!cuda_available()) {
    // Without CUDA (or a GPU) a GPU run is refused, never run on the CPU.
    EXPECT_KEEL_ERROR(trainer::training_device("cuda"), "train.device", "cuda");
    EXPECT_KEEL_ERROR(trainer::training_device("cuda:0"), "train.device", "cuda:0");
  } else {
    EXPECT_TRUE(trainer::training_device("cuda").is_cuda());
    EXPECT_KEEL_ERROR(trainer::training_device("cuda:9999"), "train.device", "visible");
  }
}

void expect_exact_resume(TrainerTest& t, const std::vector<std::string>& sets) {
  config::Config cfg = trainer::parse_config(t.config_text(), "test", sets);
  nn::NamedTensors straight_state, resumed_state;
  auto straight = t.run(cfg, {}, &straight_state);
  ASSERT_EQ(straight.losses.size(), 8u);

  // Same run in two parts: stop after 4 steps (checkpoint), resume to the end.
  std::vector<std::string> sets2 = sets;
  sets2.push_back("checkpoint.dir=" + (t.dir_ / "ckpt2").string());
  config::Config cfg2 = trainer::parse_config(t.config_text(), "test", sets2);
  trainer::TrainOptions first;
  first.stop_after = 4;
  auto part1 = t.run(cfg2, first);
  ASSERT_EQ(part1.end_step, 4);
  ASSERT_FALSE(part1.last_checkpoint.empty());
  trainer::TrainOptions second;
  second.resume = "auto";
  auto part2 = t.run(cfg2, second, &resumed_state);
  EXPECT_EQ(part2.start_step, 4);
  ASSERT_EQ(part2.losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(part1.losses[i], straight.losses[i]) << "step " << i + 1;
    EXPECT_EQ(part2.losses[i], straight.losses[4 + i]) << "step " << 5 + i;  // bit for bit
  }
  EXPECT_EQ(part1.skipped_steps + part2.skipped_steps, straight.skipped_steps);
  ASSERT_EQ(straight_state.size(), resumed_state.size());
  for (size_t i = 0; i < straight_state.size(); ++i)
    EXPECT_EQ(testing::to_doubles(straight_state[i].second),
              testing::to_doubles(resumed_state[i].second))
        << straight_state[i].first;
}

TEST_F(TrainerTest, ResumeIsBitExact) { expect_exact_resume(*this, {}); }

TEST_F(TrainerTest, HyenaResumeIsBitExact) {
  model_section_ = kHyenaSection;
  expect_exact_resume(*this, {});
}

// The small recipes of the sub-quadratic families, as shipped, on the test
// verses for 30 steps (warm-up shortened to 3 so the short run reaches the
// recipe's learning rate): the loss falls from ln(256) = 5.5 by more than
// 1.0 nat, a loose bound (measured on these repetitive verses: hyena 5.63
// -> 0.11, mamba 5.66 -> 0.10).
TEST_F(TrainerTest, SmallHyenaAndMambaRecipesLearn) {
  for (const char* family : {"hyena", "mamba"}) {
    SCOPED_TRACE(family);
    const std::string path =
        std::string(KEEL_SOURCE_DIR "/recipes/") + family + "/configs/small.pbtxt";
    std::ifstream in(path);
    ASSERT_TRUE(in) << path;
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    config::Config cfg = trainer::parse_config(
        text, path,
        {"data.shards.train_files=" + (dir_ / "train.bin").string(),
         "data.shards.val_files=" + (dir_ / "val.bin").string(), "train.steps=30",
         "train.eval_every=0", "schedule.warmup_steps=3", "checkpoint.every=0",
         "checkpoint.dir=" + (dir_ / family).string(), "logging.dir=" + (dir_ / "logs").string()});
    auto res = run(cfg, {});
    ASSERT_EQ(res.losses.size(), 30u);
    const double first = res.losses[0], last = (res.losses[28] + res.losses[29]) / 2;
    EXPECT_LT(last, first - 1.0) << "loss did not fall: " << first << " -> " << last;
    std::cout << "[ small ] " << family << " loss " << first << " -> " << last << "\n";
  }
}

TEST_F(TrainerTest, HyenaLossFalls) {
  model_section_ = kHyenaSection;
  config::Config cfg =
      trainer::parse_config(config_text(), "test",
                            {"train.steps=40", "model.hyena.dropout=0",
                             "model.hyena.filter_dropout=0", "checkpoint.every=0"});
  auto res = run(cfg, {});
  ASSERT_EQ(res.losses.size(), 40u);
  // From ln(256) = 5.5 on verses of text: a loose bound, as for GPT.
  double first = (res.losses[0] + res.losses[1]) / 2, last = (res.losses[38] + res.losses[39]) / 2;
  EXPECT_LT(last, first - 1.0) << "loss did not fall: " << first << " -> " << last;
  ASSERT_FALSE(res.val_losses.empty());
  EXPECT_LT(res.val_losses.back().second, res.losses[0]);
}

TEST_F(TrainerTest, MambaResumeIsBitExact) {
  model_section_ = kMambaSection;
  expect_exact_resume(*this, {});
}

TEST_F(TrainerTest, MambaLossFalls) {
  model_section_ = kMambaSection;
  config::Config cfg =
      trainer::parse_config(config_text(), "test", {"train.steps=40", "checkpoint.every=0"});
  auto res = run(cfg, {});
  ASSERT_EQ(res.losses.size(), 40u);
  double first = (res.losses[0] + res.losses[1]) / 2, last = (res.losses[38] + res.losses[39]) / 2;
  EXPECT_LT(last, first - 1.0) << "loss did not fall: " << first << " -> " << last;
  ASSERT_FALSE(res.val_losses.empty());
  EXPECT_LT(res.val_losses.back().second, res.losses[0]);
}

TEST_F(TrainerTest, MambaFieldsAreRefusedByName) {
  model_section_ = kMambaSection;
  expect_refused({"model.mamba.d_state=0"}, "model.mamba.d_state", "[1, 256]");
  expect_refused({"model.mamba.d_state=-3"}, "model.mamba.d_state", "[1, 256]");
  expect_refused({"model.mamba.expand=1.03"}, "model.mamba.expand", "whole number");
  expect_refused({"model.mamba.d_conv=0"}, "model.mamba.d_conv", "positive");
  expect_refused({"model.mamba.dt_min=0.5"}, "model.mamba.dt_max", "dt_min");
  expect_refused({"parallel.tp=2"}, "parallel.tp", "dp only");
  config::Config missing = trainer::parse_config(config_text(), "t");
  missing.mutable_model()->mutable_mamba()->clear_n_layer();
  EXPECT_KEEL_ERROR(recipes::validate_config(missing), "model.mamba.n_layer", "missing");
}

TEST_F(TrainerTest, HyenaFieldsAreRefusedByName) {
  model_section_ = kHyenaSection;
  expect_refused({"model.hyena.order=1"}, "model.hyena.order", ">= 2");
  expect_refused({"model.hyena.emb_dim=4"}, "model.hyena.emb_dim", "odd");
  expect_refused({"model.hyena.emb_dim=1"}, "model.hyena.emb_dim", ">= 3");
  expect_refused({"data.seq_len=32"}, "data.seq_len", "block_size");
  expect_refused({"model.hyena.filter_dropout=1"}, "model.hyena.filter_dropout", "[0, 1)");
  expect_refused({"model.hyena.decay_target=0"}, "model.hyena.decay_target", "(0, 1)");
  expect_refused({"parallel.tp=2"}, "parallel.tp", "dp only");
  config::Config missing = trainer::parse_config(config_text(), "t");
  missing.mutable_model()->mutable_hyena()->clear_n_embd();
  EXPECT_KEEL_ERROR(recipes::validate_config(missing), "model.hyena.n_embd", "missing");
  // The model itself refuses a sequence longer than its filters.
  parallel::ParallelContext ctx;
  recipes::Recipe r = recipes::make_recipe(trainer::parse_config(config_text(), "t"), ctx);
  EXPECT_KEEL_ERROR(r.loss(trainer::Batch{{{"inputs", zeros({1, 17}, DType::I64)},
                                           {"targets", zeros({1, 17}, DType::I64)}}}),
                    "sequence length 17", "block_size 16");
}

TEST_F(TrainerTest, LossFallsAndMetricsAreWritten) {
  config::Config cfg = trainer::parse_config(
      config_text(), "test", {"train.steps=40", "model.gpt.dropout=0", "checkpoint.every=0"});
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
  config::Config wider =
      trainer::parse_config(config_text(), "test", {"train.steps=8", "model.gpt.n_embd=32"});
  trainer::TrainOptions opt;
  opt.resume = "auto";
  EXPECT_KEEL_ERROR(run(wider, opt), "wte.weight", "(256, 16)", "(256, 32)");
  // The checkpoint the refused run found is still there and loadable.
  EXPECT_TRUE(
      trainer::is_complete_checkpoint(trainer::latest_checkpoint((dir_ / "ckpt").string())));
}

TEST_F(TrainerTest, ShardsOfAnotherTokenizerAreRefused) {
  config::Config cfg = trainer::parse_config(config_text(), "test", {"data.tokenizer=gpt2"});
  EXPECT_KEEL_ERROR(run(cfg, {}), "tokenizer", "byte", "gpt2");
}

TEST(Config, ParseErrorsNameFileAndLine) {
  EXPECT_KEEL_ERROR(
      trainer::parse_config("model { gpt { n_layer: 2 } }\noptim { lrr: 1 }", "cfg.pbtxt"),
      "cfg.pbtxt:2", "lrr");
  EXPECT_KEEL_ERROR(trainer::parse_config("model { gpt { n_layer: 'x' } }", "c.pbtxt"),
                    "c.pbtxt:1");
  EXPECT_KEEL_ERROR(trainer::load_config("/nonexistent/keel.pbtxt"), "/nonexistent/keel.pbtxt");
}

TEST(Config, OverridesAreCheckedByField) {
  config::Config c = trainer::parse_config("optim { lr: 1e-3 }", "t", {"optim.lr=3e-4"});
  EXPECT_DOUBLE_EQ(c.optim().lr(), 3e-4);
  c = trainer::parse_config("", "t", {"data.shards.train_files=a.bin,b.bin", "train.device=cpu"});
  ASSERT_EQ(c.data().shards().train_files_size(), 2);
  EXPECT_EQ(c.data().shards().train_files(1), "b.bin");
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"optim.lrr=1"}), "optim.lrr");
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"optim.lr=fast"}), "optim.lr", "fast");
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"optim=1"}), "optim", "section");
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"optim.lr"}), "field=value");
}

TEST_F(TrainerTest, MissingAndBadFieldsAreRefusedByName) {
  expect_refused({"optim.lr=-1"}, "optim.lr");
  expect_refused({"optim.beta2=1.5"}, "optim.beta2");
  expect_refused({"schedule.decay=step"}, "schedule.decay");
  expect_refused({"data.seq_len=17"}, "data.seq_len");
  expect_refused({"data.batch_size=3"}, "data.batch_size");
  expect_refused({"model.gpt.n_head=3"}, "model.gpt.n_embd");
  expect_refused({"parallel.tp=4"}, "model.gpt.n_head");  // 2 heads over 4 ranks
  expect_refused({"parallel.ep=2"}, "parallel.ep");
  expect_refused({"parallel.sequence_parallel=true"}, "parallel.sequence_parallel");  // tp 1
  expect_refused({"parallel.tp=2", "parallel.sequence_parallel=true", "data.seq_len=15"},
                 "data.seq_len");
  expect_refused({"train.grad_accum=0"}, "train.grad_accum");
  expect_refused({"train.device=gpu"}, "train.device");
  expect_refused({"train.device=cuda:x"}, "train.device");
  expect_refused({"train.precision=fp8"}, "train.precision");
  expect_refused({"train.min_loss_scale=0"}, "train.min_loss_scale");
  expect_refused({"train.loss_scale_window=0"}, "train.loss_scale_window");
  config::Config missing = trainer::parse_config(config_text(), "t");
  missing.mutable_model()->mutable_gpt()->clear_block_size();
  EXPECT_KEEL_ERROR(recipes::validate_config(missing), "model.gpt.block_size", "missing");
  config::Config no_family = trainer::parse_config(config_text(), "t");
  no_family.mutable_model()->clear_family();
  EXPECT_KEEL_ERROR(recipes::validate_config(no_family), "model has no family section", "gpt");
  config::Config no_source = trainer::parse_config(config_text(), "t");
  no_source.mutable_data()->clear_source();
  EXPECT_KEEL_ERROR(recipes::validate_config(no_source), "data has no source", "shards");
}

// A config in the flat, GPT-only layout of before the family sections gets
// told where each field lives now, in the file and on the command line.
TEST(Config, FieldsOfTheOldLayoutSayWhereTheyMoved) {
  EXPECT_KEEL_ERROR(trainer::parse_config("model {\n  n_head: 2 }", "old.pbtxt"), "old.pbtxt:2",
                    "n_head", "model { gpt { n_head: ... } }");
  EXPECT_KEEL_ERROR(trainer::parse_config("model { family: 'gpt' }", "old.pbtxt"), "family",
                    "model { gpt { ... } }");
  EXPECT_KEEL_ERROR(trainer::parse_config("data { train_files: 'a.bin' }", "old.pbtxt"),
                    "train_files", "data { shards { train_files: ... } }");
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"model.n_embd=32"}), "model.n_embd",
                    "--set model.gpt.n_embd");
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"data.val_files=v.bin"}), "data.val_files",
                    "--set data.shards.val_files");
  // A field that never existed gets no hint.
  EXPECT_KEEL_ERROR(trainer::parse_config("", "t", {"model.n_blocks=3"}), "model.n_blocks");
}

// Every shipped config parses and validates (tiny and small train in the
// tests and the quickstart; gpt2_124m is checked here).
TEST(Config, ShippedConfigsValidate) {
  for (const char* name : {"tiny", "small", "gpt2_124m"}) {
    const std::string path =
        std::string(KEEL_SOURCE_DIR) + "/recipes/gpt/configs/" + name + ".pbtxt";
    config::Config c = trainer::load_config(path);
    EXPECT_NO_THROW(recipes::validate_config(c)) << path;
    EXPECT_EQ(recipes::family_of(c).name, std::string("gpt")) << path;
  }
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

// The flat layout of keel's first checkpoints, for the same run as config_text().
std::string legacy_text(const std::string& today) {
  std::string s = today;
  auto replace = [&](const std::string& a, const std::string& b) {
    const size_t at = s.find(a);
    ASSERT_NE(at, std::string::npos) << a;
    s.replace(at, a.size(), b);
  };
  replace("model { gpt { ", "model { family: 'gpt' ");
  replace(" } }\n", " }\n");
  replace("data { shards { train_files", "data { train_files");
  replace("' } batch_size", "' batch_size");
  return s;
}

// A checkpoint written before per-family sections and the context's RNG
// streams (flat config text, one generator's state) still gives its config,
// evaluates, and resumes into the steps the unbroken run took.
TEST_F(TrainerTest, CheckpointsOfTheFlatLayoutStillLoadAndResume) {
  const std::vector<std::string> sets = {"model.gpt.dropout=0", "checkpoint.every=0"};
  config::Config cfg = trainer::parse_config(config_text(), "test", sets);
  auto straight = run(cfg, {});
  ASSERT_EQ(straight.losses.size(), 8u);
  trainer::TrainOptions first;
  first.stop_after = 4;
  config::Config cfg2 = cfg;
  cfg2.mutable_checkpoint()->set_dir((dir_ / "ckpt2").string());
  const std::string today = run(cfg2, first).last_checkpoint;

  // The same checkpoint as keel wrote it before: everything from today's,
  // the config in the flat layout, one generator's state.
  parallel::ParallelContext ctx;
  recipes::Recipe r = recipes::make_recipe(cfg, ctx);
  trainer::CheckpointData ck;
  ck.model = r.module->state_dict();
  trainer::AdamW adamw(r.module->named_parameters(), r.module->decayed_parameter_names(), {});
  ck.optim = adamw.state();
  ck.meta_int = {{"rng_seed", 0},
                 {"rng_offset", 0},
                 {"data_shard", 0},
                 {"data_offset", 0},
                 {"data_epoch", 0},
                 {"optim_steps", 0},
                 {"loss_scale_clean_steps", 0}};
  ck.meta_float = {{"loss_scale", 0.0}};
  trainer::load_checkpoint(today, ck);
  const std::string flat = legacy_text(config_text());
  ASSERT_FALSE(::testing::Test::HasFailure());
  ck.meta_text = {{"config", flat}, {"tokenizer", "byte"}};
  const std::string old = (dir_ / "old" / "step_00000004.h5").string();
  fs::create_directories(dir_ / "old");
  trainer::save_checkpoint(old, ck);

  // Its config reads as today's.
  config::Config migrated = trainer::checkpoint_config(old);
  config::Config want = trainer::parse_config(config_text(), "test");
  want.mutable_task()->mutable_causal_lm();  // the old layout's only task, now said
  EXPECT_EQ(trainer::config_to_text(migrated), trainer::config_to_text(want));
  // It evaluates as the checkpoint it came from.
  auto val_of = [&](const std::string& path) {
    parallel::ParallelContext c;
    recipes::Recipe m = recipes::make_recipe(trainer::checkpoint_config(path), c);
    trainer::CheckpointData weights;
    weights.model = m.module->state_dict();
    trainer::load_checkpoint(path, weights);
    return trainer::evaluate(trainer::checkpoint_config(path), m, c, 2);
  };
  EXPECT_EQ(val_of(old), val_of(today));
  // And resumes into the unbroken run's steps 5..8 (no dropout: the masks
  // of the old single generator do not enter).
  trainer::TrainOptions resume;
  resume.resume = old;
  cfg2.mutable_checkpoint()->set_dir((dir_ / "ckpt3").string());
  auto rest = run(cfg2, resume);
  EXPECT_EQ(rest.start_step, 4);
  ASSERT_EQ(rest.losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(rest.losses[i], straight.losses[4 + i]) << i;

  // Text in neither layout gets today's error.
  EXPECT_KEEL_ERROR(trainer::parse_checkpoint_config("model { n_layers: 2 }", "x.h5:/meta/config"),
                    "x.h5:/meta/config", "n_layers");
}

}  // namespace
}  // namespace keel
