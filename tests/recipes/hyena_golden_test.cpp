// Correctness of the Hyena recipe against PyTorch: a tiny order-3 Hyena LM
// starts from the initial weights in tests/golden/hyena_tiny.h5 (written by
// scripts/reference/hyena_golden.py, a float64 re-implementation from the
// paper) and must reproduce the reference logits, loss and every parameter
// gradient, then a 5-step AdamW trajectory on the same batch: the losses,
// the gradient norms and the final weights, per tensor. The batch is
// shorter than block_size, so the filters are generated at block_size
// positions and cut, as in the reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "recipes/hyena/hyena.h"
#include "recipes/recipe.h"
#include "tests/testing/golden.h"

namespace keel::hyena {
namespace {

using testing::Doubles;

const char* const kGoldenPath = KEEL_SOURCE_DIR "/tests/golden/hyena_tiny.h5";
const char* const kRegenerate = "/usr/bin/python3 scripts/reference/hyena_golden.py";

// Tolerances: keel runs in f32 (its FFTs too), the reference in f64 from the
// same f32 weights. Each bound is f32 rounding with a margin of ~10x over
// what was measured on x86-64 (OpenBLAS), noted as "measured". The FFT
// convolutions add error relative to the largest value of a row rather than
// to each output, so the absolute bounds are a little wider than GPT's.
constexpr double kLogitsRtol = 1e-5, kLogitsAtol = 5e-6;
constexpr double kLossAtol = 5e-6;
// Gradients: relative to each tensor's largest reference entry.
constexpr double kGradRtol = 1e-4, kGradAtolOfMax = 2e-5;
constexpr double kNormRtol = 1e-5;
constexpr double kLossesAtol = 1e-5;
// Final weights after 5 steps of |update| ~ lr = 1e-3: Adam's division by
// sqrt(v) amplifies rounding in entries with small gradients.
constexpr double kFinalRtol = 1e-5, kFinalAtol = 1e-5;

class HyenaGoldenTest : public testing::GoldenRecipeTest<HyenaLM> {
 protected:
  void SetUp() override {
    open(kGoldenPath, kRegenerate, "hyena", "dropout: 0 bias: true modulate: true",
         {"vocab_size", "padded_vocab_size", "block_size", "n_layer", "n_embd", "order",
          "filter_order", "emb_dim", "short_filter_order", "filter_inner_layers"},
         {"fast_decay_pct", "slow_decay_pct", "decay_target", "modulation_shift"});
    if (HasFatalFailure()) return;
    ASSERT_EQ(model_->config().op.order, 3);
    ASSERT_LT(ids_.size(1), model_->config().block_size);
  }
};

TEST_F(HyenaGoldenTest, DecayedParametersAreTheProjectionAndMlpWeights) {
  // The reference decays exactly these (not the filter MLP, convolutions,
  // norms or biases); a change in keel must regenerate the golden file.
  std::vector<std::string> expected;
  for (int64_t l = 0; l < model_->config().n_layer; ++l)
    for (const char* m : {"mixer.in_proj", "mixer.out_proj", "mlp.fc", "mlp.proj"})
      expected.push_back("blocks." + std::to_string(l) + "." + m + ".weight");
  std::vector<std::string> got = model_->decayed_parameter_names();
  std::sort(expected.begin(), expected.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, expected);
}

const testing::GoldenTolerances kTol{kLogitsRtol, kLogitsAtol,    kLossAtol,
                                     kGradRtol,   kGradAtolOfMax, kNormRtol,
                                     kLossesAtol, kFinalRtol,     kFinalAtol};

TEST_F(HyenaGoldenTest, ForwardAndGradientsMatchPyTorch) {
  testing::expect_golden_step(
      *file_, *model_, [&] { return model_->forward(ids_); }, [&] { return loss(); }, kTol);
}

TEST_F(HyenaGoldenTest, AdamWTrajectoryMatchesPyTorch) {
  ASSERT_EQ(file_->int_attr("steps"), 5);
  testing::expect_golden_trajectory(
      *file_, *model_, [&] { return loss(); }, kTol);
}

}  // namespace
}  // namespace keel::hyena
