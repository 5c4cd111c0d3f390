// GPT-2's four dropout sites in the GPT recipe: the embeddings (drop), the
// attention probabilities (attn.attn_dropout), the attention and MLP
// residual branches (attn.resid_dropout, mlp.resid_dropout). Each is wired
// into the forward and acts only in training; in eval the model is the p = 0
// model; checkpointed blocks replay every mask; a data-parallel shard of the
// batch draws the serial masks for its rows at every site.
#include <gtest/gtest.h>

#include <functional>

#include "kernels/dropout.h"
#include "nn/attention.h"
#include "nn/layers.h"
#include "recipes/gpt/gpt.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tiny_gpt.h"

namespace keel {
namespace {

using testing::Doubles;

gpt::GptConfig tiny(double dropout) { return testing::tiny_gpt_config(dropout); }

// (4, 8) token ids in [0, 50).
Tensor tiny_ids() {
  std::vector<int64_t> v(32);
  for (size_t i = 0; i < v.size(); ++i) v[i] = int64_t((i * 7 + 3) % 50);
  return from_vector(v, {4, 8});
}

Doubles logits(const gpt::GPT& m, const Tensor& ids) {
  manual_seed(3);
  return testing::to_doubles(m.forward(ids));  // (B, T, V)
}

struct Site {
  const char* name;
  std::function<nn::Dropout&(gpt::GPT&)> get;
};

const std::vector<Site>& sites() {
  static const std::vector<Site> s = {
      {"drop", [](gpt::GPT& m) -> nn::Dropout& { return *m.drop; }},
      {"blocks.0.attn.attn_dropout",
       [](gpt::GPT& m) -> nn::Dropout& { return *(*m.blocks)[0].attn->attn_dropout; }},
      {"blocks.1.attn.resid_dropout",
       [](gpt::GPT& m) -> nn::Dropout& { return *(*m.blocks)[1].attn->resid_dropout; }},
      {"blocks.0.mlp.resid_dropout",
       [](gpt::GPT& m) -> nn::Dropout& { return *(*m.blocks)[0].mlp->resid_dropout; }},
  };
  return s;
}

TEST(DropoutSites, EachSiteActsInTrainingAndEvalIsTheZeroPModel) {
  const Tensor ids = tiny_ids();
  gpt::GPT m(tiny(0.3), 1), m0(tiny(0.0), 1);  // the same weights: Dropout draws none
  m.eval();
  m0.eval();
  const Doubles eval = logits(m, ids);
  // The same weights and the same fused path: bit for bit.
  EXPECT_EQ(eval, logits(m0, ids));
  m0.train();
  EXPECT_EQ(logits(m0, ids), eval);  // p = 0 in training is no dropout
  EXPECT_EQ(default_generator().offset(), 0u);
  for (const Site& site : sites()) {
    SCOPED_TRACE(site.name);
    m.eval();
    site.get(m).train();  // only this site in training mode
    EXPECT_TRUE(site.get(m).active());
    EXPECT_NE(logits(m, ids), eval);
    EXPECT_EQ(default_generator().offset(), 1u);  // exactly this site drew a mask
    site.get(m).eval();
    EXPECT_EQ(logits(m, ids), eval);
    EXPECT_EQ(default_generator().offset(), 0u);
  }
  // All of them: the embeddings once, three sites per block.
  m.train();
  EXPECT_NE(logits(m, ids), eval);
  EXPECT_EQ(default_generator().offset(), uint64_t(1 + 3 * tiny(0).n_layer));
}

// The MLP's dropout is on its output, the residual branch (GPT-2's place),
// and the attention's output dropout likewise.
TEST(DropoutSites, ResidualDropoutsMaskTheBranchOutputs) {
  Generator gen(2);
  Tensor x = testing::uniform({2, 5, 8}, 6);  // (B, T, C)
  parallel::ParallelContext one;
  nn::MLP mlp(8, 32, true, one, gen, 0.02, 0.02, 0.5);
  nn::CausalSelfAttention attn(8, 2, true, 0.5, one, gen, 0.02, 0.02);
  mlp.eval();
  attn.eval();
  const Tensor mlp_eval = mlp.forward(x), attn_eval = attn.forward(x);  // (B, T, C)
  mlp.train();
  attn.resid_dropout->train();  // attn_dropout stays off
  manual_seed(4);
  EXPECT_EQ(testing::to_doubles(mlp.forward(x)),
            testing::to_doubles(kernels::dropout(mlp_eval, 0.5, 4, 0)));
  EXPECT_EQ(testing::to_doubles(attn.forward(x)),
            testing::to_doubles(kernels::dropout(attn_eval, 0.5, 4, 1)));
}

// Activation recomputation replays every site's mask (the attention
// probabilities' included): the gradients equal the stored run's.
// With the default generator and with a training context's two streams (as
// the recipe builds GPT): the recomputed blocks draw the forward's masks,
// and every stream ends where the plain model's does.
TEST(DropoutSites, CheckpointedBlocksReplayEveryMask) {
  const Tensor ids = tiny_ids();
  for (bool streams : {false, true}) {
    SCOPED_TRACE(streams ? "context streams" : "default generator");
    Generator rep[2] = {Generator(5), Generator(5)}, mp[2] = {Generator(6), Generator(6)};
    gpt::GptConfig c = tiny(0.3);
    auto rng = [&](int i) {
      return streams ? nn::DropoutStreams{&rep[i], &mp[i]} : nn::DropoutStreams{};
    };
    gpt::GPT plain(c, 1, rng(0));
    c.checkpoint_activations = true;
    gpt::GPT ckpt(c, 1, rng(1));
    std::vector<Doubles> grads[2];
    double losses[2];
    uint64_t offsets[2][3];
    int i = 0;
    for (gpt::GPT* m : {&plain, &ckpt}) {
      manual_seed(5);
      Tensor loss = m->loss(ids, ids);
      loss.backward();
      losses[i] = loss.item();
      for (const Tensor& p : m->parameters()) grads[i].push_back(testing::to_doubles(p.grad()));
      offsets[i][0] = default_generator().offset();
      offsets[i][1] = rep[i].offset();
      offsets[i][2] = mp[i].offset();
      ++i;
    }
    EXPECT_EQ(losses[0], losses[1]);
    ASSERT_EQ(grads[0].size(), grads[1].size());
    // The recomputed forward is the same arithmetic: exact.
    for (size_t k = 0; k < grads[0].size(); ++k) EXPECT_EQ(grads[0][k], grads[1][k]) << k;
    for (int s = 0; s < 3; ++s) EXPECT_EQ(offsets[0][s], offsets[1][s]) << "stream " << s;
    if (streams) {
      EXPECT_GT(offsets[0][2], 0u) << "attention dropout drew from the mp stream";
    }
  }
}

// Under a DropoutShardGuard, rank r's rows of the batch get the serial
// model's logits for those rows, with all four sites drawing masks.
TEST(DropoutSites, BatchShardDrawsTheSerialMasksAtEverySite) {
  const Tensor ids = tiny_ids();  // (4, 8)
  gpt::GPT m(tiny(0.3), 1);
  manual_seed(6);
  const Tensor serial = m.forward(ids);  // (4, 8, V)
  for (int64_t r = 0; r < 2; ++r) {
    SCOPED_TRACE(r);
    DropoutShardGuard shard(r, 2);
    manual_seed(6);
    Tensor part = m.forward(ids.narrow(0, 2 * r, 2));  // (2, 8, V)
    // The masks are identical; the matmuls run on fewer rows, so f32 sums
    // may round differently (values O(1)).
    EXPECT_TRUE(testing::all_close(testing::to_doubles(part),
                                   testing::to_doubles(serial.narrow(0, 2 * r, 2)), 1e-5, 1e-6));
  }
  // And the masks matter: without the guard the second half differs.
  manual_seed(6);
  EXPECT_FALSE(testing::all_close(testing::to_doubles(m.forward(ids.narrow(0, 2, 2))),
                                  testing::to_doubles(serial.narrow(0, 2, 2)), 1e-3, 1e-3));
}

}  // namespace
}  // namespace keel
