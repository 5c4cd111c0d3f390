// The tiny GPT trains on the GPU through the same trainer as on the CPU:
// fp32 starts at the CPU's loss and follows its trajectory, bf16 starts
// within bf16's rounding of it and learns, a GPU run resumes bit for bit,
// and checkpoints written on the GPU load on the CPU. Skips without a GPU.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "recipes/recipe.h"
#include "tests/cuda/parity.h"
#include "tests/testing/corpus.h"
#include "tests/testing/temp_dir.h"
#include "trainer/checkpoint.h"
#include "trainer/trainer.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

class GpuTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    KEEL_SKIP_WITHOUT_CUDA();
    tmp_ = std::make_unique<testing::TempDir>("gpu_train");
    dir_ = tmp_->path();
    testing::write_verse_shards(dir_);
  }

  config::Config config(const std::vector<std::string>& sets) const {
    const std::string text =
        "model { gpt { vocab_size: 256 padded_vocab_size: 256 block_size: 64 n_layer: 2 "
        "n_head: 2 n_embd: 64 dropout: 0.0 } }\n"
        "data { shards { train_files: '" +
        (dir_ / "train.bin").string() + "' val_files: '" + (dir_ / "val.bin").string() +
        "' } batch_size: 8 seq_len: 64 tokenizer: 'byte' }\n"
        "optim { lr: 3e-3 }\n"
        "train { steps: 30 log_every: 10 seed: 5 }\n"
        "checkpoint { dir: '" +
        (dir_ / "ckpt").string() +
        "' every: 0 }\n"
        "logging { dir: '" +
        (dir_ / "logs").string() + "' jsonl: false tensorboard: false }\n";
    return trainer::parse_config(text, "gpu test", sets);
  }

  trainer::TrainResult run(const config::Config& cfg, trainer::TrainOptions opt = {},
                           nn::NamedTensors* final_state = nullptr) {
    parallel::ParallelContext ctx(trainer::training_device(cfg.train().device()));
    recipes::Recipe r = recipes::make_recipe(cfg, ctx);
    std::ostringstream log;
    opt.out = &log;
    auto res = trainer::train(cfg, r, ctx, opt);
    if (final_state) {
      for (const auto& [name, t] : r.module->state_dict())
        final_state->emplace_back(name, t.to(Device::cpu()));
    }
    return res;
  }

  std::unique_ptr<testing::TempDir> tmp_;
  fs::path dir_;
};

TEST_F(GpuTraining, Fp32MatchesTheCpu) {
  auto cpu = run(config({"train.device=cpu"}));
  auto gpu = run(config({"train.device=cuda"}));
  ASSERT_EQ(gpu.losses.size(), 30u);
  // Same weights, same batch: the first loss differs only by f32 summation
  // order (cuBLAS vs OpenBLAS, kernel reductions): a few ulp of ~5.5.
  EXPECT_NEAR(gpu.losses[0], cpu.losses[0], 1e-5 * cpu.losses[0]);
  // Rounding differences grow through AdamW's updates but stay small over
  // 30 steps of a healthy run.
  EXPECT_NEAR(gpu.losses.back(), cpu.losses.back(), 2e-2 * cpu.losses.back());
  EXPECT_LT(gpu.losses.back(), gpu.losses[0] - 1.0);
}

TEST_F(GpuTraining, Bf16StartsWithinRoundingAndLearns) {
  auto cpu = run(config({"train.device=cpu"}));
  auto bf16 = run(config({"train.device=cuda", "train.precision=bf16"}));
  // 8 significant bits in weights, activations and logits: well under 1% of
  // a loss near ln(256).
  EXPECT_NEAR(bf16.losses[0], cpu.losses[0], 1e-2 * cpu.losses[0]);
  EXPECT_LT(bf16.losses.back(), bf16.losses[0] - 1.0);
  EXPECT_NEAR(bf16.losses.back(), cpu.losses.back(), 5e-2 * cpu.losses.back());
}

TEST_F(GpuTraining, Fp16WithLossScalingLearns) {
  auto res = run(
      config({"train.device=cuda", "train.precision=fp16", "train.initial_loss_scale=16777216"}));
  EXPECT_GE(res.skipped_steps, 1);  // 2^24 overflows f16 at first
  EXPECT_LT(res.losses.back(), res.losses[0] - 1.0);
}

TEST_F(GpuTraining, ResumeIsBitExactAndCheckpointsLoadOnTheCpu) {
  const std::vector<std::string> sets = {"train.device=cuda", "model.gpt.dropout=0.1",
                                         "train.grad_accum=2", "train.steps=8"};
  nn::NamedTensors straight_state, resumed_state;
  auto straight = run(config(sets), {}, &straight_state);
  std::vector<std::string> sets2 = sets;
  sets2.push_back("checkpoint.dir=" + (dir_ / "ckpt2").string());
  trainer::TrainOptions first;
  first.stop_after = 4;
  auto part1 = run(config(sets2), first);
  trainer::TrainOptions second;
  second.resume = "auto";
  auto part2 = run(config(sets2), second, &resumed_state);
  ASSERT_EQ(part2.losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(part2.losses[i], straight.losses[4 + i]) << i;
  ASSERT_EQ(straight_state.size(), resumed_state.size());
  for (size_t i = 0; i < straight_state.size(); ++i)
    EXPECT_EQ(testing::to_doubles(straight_state[i].second),
              testing::to_doubles(resumed_state[i].second))
        << straight_state[i].first;

  // The GPU checkpoint evaluates on the CPU to the GPU's validation loss.
  parallel::ParallelContext alone;
  recipes::Recipe r = recipes::make_recipe(config(sets), alone);
  trainer::CheckpointData ck;
  ck.model = r.module->state_dict();
  trainer::load_checkpoint(part1.last_checkpoint, ck);
  const double cpu_val = trainer::evaluate(config(sets), r, alone, 2);
  r.module->to(cuda_test::gpu());
  const double gpu_val = trainer::evaluate(config(sets), r, alone, 2);
  EXPECT_NEAR(gpu_val, cpu_val, 1e-5 * cpu_val);
}

}  // namespace
}  // namespace keel
