// Modules: stable dotted names, state dicts, train/eval, load errors.
#include <gtest/gtest.h>

#include "nn/attention.h"
#include "nn/layers.h"
#include "recipes/gpt/gpt.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tiny_gpt.h"

namespace keel {
namespace {

gpt::GptConfig tiny() { return testing::tiny_gpt_config(); }

TEST(Module, DottedNamesInRegistrationOrder) {
  gpt::GPT model(tiny(), 1);
  auto named = model.named_parameters();
  std::vector<std::string> names;
  for (auto& [n, t] : named) names.push_back(n);
  ASSERT_GE(names.size(), 6u);
  EXPECT_EQ(names[0], "wte.weight");
  EXPECT_EQ(names[1], "wpe.weight");
  EXPECT_EQ(names[2], "blocks.0.ln_1.weight");
  EXPECT_EQ(names[3], "blocks.0.ln_1.bias");
  EXPECT_EQ(names[4], "blocks.0.attn.qkv.weight");
  EXPECT_EQ(names.back(), "ln_f.bias");
  EXPECT_NE(std::find(names.begin(), names.end(), "blocks.1.mlp.proj.weight"), names.end());
  EXPECT_EQ(model.named_parameters()[0].second.sizes(), (Shape{128, 8}));  // padded vocab
  for (auto& [n, t] : named) EXPECT_TRUE(t.requires_grad()) << n;
  // Weight decay: Linear matrices only.
  auto decayed = model.decayed_parameter_names();
  EXPECT_NE(std::find(decayed.begin(), decayed.end(), "blocks.0.attn.qkv.weight"), decayed.end());
  EXPECT_EQ(std::find(decayed.begin(), decayed.end(), "wte.weight"), decayed.end());
  EXPECT_EQ(std::find(decayed.begin(), decayed.end(), "blocks.0.ln_1.weight"), decayed.end());
  EXPECT_EQ(std::find(decayed.begin(), decayed.end(), "blocks.0.attn.qkv.bias"), decayed.end());
}

TEST(Module, SameSeedSameWeights) {
  gpt::GPT a(tiny(), 7), b(tiny(), 7), c(tiny(), 8);
  auto pa = a.parameters(), pb = b.parameters(), pc = c.parameters();
  EXPECT_EQ(testing::to_doubles(pa[0]), testing::to_doubles(pb[0]));
  EXPECT_NE(testing::to_doubles(pa[0]), testing::to_doubles(pc[0]));
}

TEST(Module, StateDictRoundTripAndErrors) {
  gpt::GPT a(tiny(), 1), b(tiny(), 2);
  b.load_state_dict(a.state_dict());
  auto sa = a.state_dict(), sb = b.state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i)
    EXPECT_EQ(testing::to_doubles(sa[i].second), testing::to_doubles(sb[i].second)) << sa[i].first;
  auto bad = a.state_dict();
  bad[1].second = zeros({3, 3});
  EXPECT_KEEL_ERROR(b.load_state_dict(bad), "wpe.weight", "(3, 3)", "(16, 8)");
  auto missing = a.state_dict();
  missing.pop_back();
  EXPECT_KEEL_ERROR(b.load_state_dict(missing), "ln_f.bias", "missing");
  auto extra = a.state_dict();
  extra.emplace_back("nope.weight", zeros({1}));
  EXPECT_KEEL_ERROR(b.load_state_dict(extra), "nope.weight");
}

TEST(Module, TrainEvalPropagates) {
  gpt::GPT m(tiny(), 1);
  EXPECT_TRUE(m.blocks->operator[](1).attn->resid_dropout->is_training());
  m.eval();
  EXPECT_FALSE(m.blocks->operator[](1).attn->resid_dropout->is_training());
  m.train();
  EXPECT_TRUE(m.is_training());
}

TEST(Module, BadConfigsAreRefusedByField) {
  auto c = tiny();
  c.n_head = 3;
  EXPECT_KEEL_ERROR(gpt::GPT(c, 1), "model.gpt.n_embd", "model.gpt.n_head");
  c = tiny();
  c.n_layer = 0;
  EXPECT_KEEL_ERROR(gpt::GPT(c, 1), "model.gpt.n_layer");
  gpt::GPT m(tiny(), 1);
  EXPECT_KEEL_ERROR(m.forward(zeros({2, 17}, DType::I64)), "block_size");
  EXPECT_KEEL_ERROR(m.forward(zeros({17}, DType::I64)), "(B, T)");
}

}  // namespace
}  // namespace keel
