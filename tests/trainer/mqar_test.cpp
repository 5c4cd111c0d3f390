// The MQAR generator (trainer/mqar.h): its examples have Zoology's
// structure (distinct keys and values from the two halves of the
// vocabulary, every query's target the value paired with its key, targets
// only there), the query distances follow the power law, examples are a
// function of (seed, split, index), train and test differ, sizes that do
// not fit are refused by field; and a tiny attention model learns the task.
#include "trainer/mqar.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "recipes/causal_lm.h"
#include "recipes/gpt/gpt.h"
#include "recipes/hyena/hyena.h"
#include "recipes/mamba/mamba.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/temp_dir.h"
#include "trainer/trainer.h"

namespace keel::trainer {
namespace {

MqarSpec spec(int64_t V, int64_t T, int64_t P, double a = 0.01, uint64_t seed = 7) {
  MqarSpec s;
  s.vocab_size = V;
  s.seq_len = T;
  s.num_kv_pairs = P;
  s.power_a = a;
  s.seed = seed;
  return s;
}

TEST(Mqar, ExamplesHaveZoologysStructure) {
  const MqarSpec s = spec(64, 48, 6);
  s.validate();
  for (uint64_t i = 0; i < 200; ++i) {
    SCOPED_TRACE(i);
    const MqarExample ex = mqar_example(s, 0, i);
    ASSERT_EQ(ex.inputs.size(), 48u);
    ASSERT_EQ(ex.targets.size(), 48u);
    std::map<int64_t, int64_t> value_of;
    std::set<int64_t> values;
    for (int64_t j = 0; j < 6; ++j) {
      const int64_t k = ex.inputs[size_t(2 * j)], v = ex.inputs[size_t(2 * j + 1)];
      EXPECT_GE(k, 1);
      EXPECT_LT(k, 32);  // keys from [1, V/2)
      EXPECT_GE(v, 32);  // values from [V/2, V)
      EXPECT_LT(v, 64);
      EXPECT_TRUE(value_of.emplace(k, v).second) << "key " << k << " repeated";
      EXPECT_TRUE(values.insert(v).second) << "value " << v << " repeated";
      EXPECT_EQ(ex.targets[size_t(2 * j)], kMqarIgnore);
      EXPECT_EQ(ex.targets[size_t(2 * j + 1)], kMqarIgnore);
    }
    std::set<int64_t> asked;
    for (int64_t t = 12; t < 48; ++t) {
      const int64_t x = ex.inputs[size_t(t)];
      EXPECT_GE(x, 0);
      EXPECT_LT(x, 64);
      if (ex.targets[size_t(t)] == kMqarIgnore) continue;
      EXPECT_EQ((t - 12) % 2, 0) << "a query off the even slots at " << t;
      ASSERT_TRUE(value_of.count(x)) << "query " << x << " at " << t << " is no key";
      EXPECT_EQ(ex.targets[size_t(t)], value_of[x]);
      EXPECT_TRUE(asked.insert(x).second) << "key " << x << " asked twice";
    }
    EXPECT_EQ(asked.size(), 6u) << "every key is asked once";
  }
}

TEST(Mqar, WithoutRandomNonQueriesTheGapsHoldTokenZero) {
  // Zoology's figure-2 setting: pairs, queries, and token 0 (never a key)
  // everywhere else; the pairs and queries are the random setting's own.
  MqarSpec s = spec(64, 48, 6);
  s.random_non_queries = false;
  for (uint64_t i = 0; i < 50; ++i) {
    SCOPED_TRACE(i);
    const MqarExample ex = mqar_example(s, 0, i), noisy = mqar_example(spec(64, 48, 6), 0, i);
    EXPECT_EQ(ex.targets, noisy.targets);
    for (size_t t = 0; t < 48; ++t) {
      const bool pair = t < 12, query = ex.targets[t] != kMqarIgnore;
      if (pair || query)
        EXPECT_EQ(ex.inputs[t], noisy.inputs[t]) << t;
      else
        EXPECT_EQ(ex.inputs[t], 0) << t;
    }
  }
}

TEST(Mqar, FirstQueryDistancesFollowThePowerLaw) {
  // The first key's gap g is drawn from p(g) ~ (g + 1)^(a - 1) over the
  // (T - 2P) / 2 slots (later keys draw from what is left). With a = 0.3 the
  // law is steep enough to see: compare the histogram of 20000 examples
  // with it, cell by cell, within 4 standard deviations of a binomial.
  const MqarSpec s = spec(64, 40, 2, 0.3);
  const int64_t space = (40 - 4) / 2, n = 20000;
  std::vector<double> p(static_cast<size_t>(space));
  double total = 0;
  for (int64_t g = 0; g < space; ++g) total += p[size_t(g)] = std::pow(double(g + 1), -0.7);
  std::vector<int64_t> hist(static_cast<size_t>(space), 0);
  for (int64_t i = 0; i < n; ++i) {
    const MqarExample ex = mqar_example(s, 0, uint64_t(i));
    const int64_t key = ex.inputs[0];
    for (int64_t t = 4; t < 40; t += 2)
      if (ex.targets[size_t(t)] != kMqarIgnore && ex.inputs[size_t(t)] == key)
        ++hist[size_t((t - 4) / 2)];
  }
  for (int64_t g = 0; g < space; ++g) {
    const double q = p[size_t(g)] / total, mean = q * double(n);
    const double sd = std::sqrt(double(n) * q * (1 - q));
    EXPECT_NEAR(double(hist[size_t(g)]), mean, 4 * sd) << "gap " << g;
  }
  EXPECT_GT(hist[0], 4 * hist[size_t(space - 1)]) << "short distances are the likeliest";
}

TEST(Mqar, DeterministicFromTheSeedAndSplitsDiffer) {
  const MqarSpec s = spec(128, 64, 8);
  const MqarExample a = mqar_example(s, 0, 5), b = mqar_example(s, 0, 5);
  EXPECT_EQ(a.inputs, b.inputs);
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_NE(mqar_example(s, 0, 6).inputs, a.inputs);
  // Train (stream 0) and test (stream 1), and other seeds, are other examples.
  std::set<std::vector<int64_t>> train;
  for (uint64_t i = 0; i < 500; ++i) train.insert(mqar_example(s, 0, i).inputs);
  for (uint64_t i = 0; i < 500; ++i) EXPECT_FALSE(train.count(mqar_example(s, 1, i).inputs));
  EXPECT_NE(mqar_example(spec(128, 64, 8, 0.01, 8), 0, 5).inputs, a.inputs);
}

TEST(Mqar, SizesThatDoNotFitAreRefusedByField) {
  EXPECT_KEEL_ERROR(spec(64, 32, 9).validate(), "data.synthetic.mqar.num_kv_pairs", "9",
                    "data.seq_len 32");
  EXPECT_KEEL_ERROR(spec(16, 64, 8).validate(), "data.synthetic.mqar.vocab_size", "16",
                    "vocab_size >= 18");
  EXPECT_KEEL_ERROR(spec(64, 33, 4).validate(), "data.seq_len 33", "even");
  EXPECT_KEEL_ERROR(spec(64, 32, 0).validate(), "num_kv_pairs must be positive");
}

std::string mqar_config(const std::string& dir, const std::string& model, int64_t steps) {
  return "model { " + model +
         " }\n"
         "task { mqar {} }\n"
         "data { synthetic { mqar { vocab_size: 64 num_kv_pairs: 4 num_train: 20000 num_test: 256 "
         "seed: 3 } } batch_size: 64 seq_len: 32 tokenizer: 'byte' }\n"
         "optim { lr: 1e-3 weight_decay: 0.0 }\n"
         "schedule { warmup_steps: 20 decay: 'cosine' }\n"
         "train { steps: " +
         std::to_string(steps) + " log_every: 100 eval_every: " + std::to_string(steps) +
         " eval_batches: 8 seed: 1 }\n"
         "checkpoint { dir: '" +
         dir + "/ckpt' every: 0 }\nlogging { dir: '" + dir + "/logs' }\n";
}

TEST(Mqar, TinyAttentionLearnsTheTask) {
  // Two layers of attention alone (no MLP), width 64 and 4 heads, on seq 32
  // with 4 pairs: Zoology's easiest cell. Training sits near ln 4 (it knows
  // the 4 values, not which) until the two-layer lookup forms, then jumps:
  // over 3000 cosine steps (lr 1e-3, batch 64) it measured 0.47 at step
  // 1000, 0.99 at 2000 and 1.0 at the end. A loose bound: > 90% of the test
  // queries right after 3000 steps (about 50 s on 2 cores).
  testing::TempDir tmp("mqar");
  const config::Config cfg = parse_config(
      mqar_config(tmp.path().string(),
                  "gpt { vocab_size: 64 padded_vocab_size: 64 block_size: 32 n_layer: 2 "
                  "n_head: 4 n_embd: 64 mlp: false }",
                  3000),
      "mqar test");
  parallel::ParallelContext ctx;
  recipes::Recipe r = recipes::make_recipe(cfg, ctx);
  EXPECT_EQ(r.module->named_parameters().size(), 2 + 2 * 6u + 2)
      << "wte, wpe; ln_1, qkv, proj per block (no ln_2, no mlp); ln_f";
  std::ostringstream log;
  TrainOptions opt;
  opt.out = &log;
  TrainResult res = train(cfg, r, ctx, opt);
  ASSERT_EQ(res.val_metrics.size(), 1u) << log.str();
  ASSERT_EQ(res.val_metrics[0].second.size(), 1u);
  EXPECT_EQ(res.val_metrics[0].second[0].first, "accuracy");
  EXPECT_GT(res.val_metrics[0].second[0].second, 0.9) << log.str();
  EXPECT_NE(log.str().find("| val accuracy "), std::string::npos);
}

TEST(Mqar, TheLossCountsOnlyTheQueryPositions) {
  // Logits that are right at every query position and arbitrary elsewhere
  // give the loss of the queries alone and accuracy 1.
  testing::TempDir tmp("mqar");
  const config::Config cfg = parse_config(
      mqar_config(tmp.path().string(), "mamba { n_layer: 1 n_embd: 16 d_state: 4 }", 1), "t");
  parallel::ParallelContext ctx;
  recipes::Recipe r = recipes::make_recipe(cfg, ctx);
  Batch b = r.data(Split::Train)->next();
  const Tensor& t = b.at("targets");
  const std::vector<int64_t> tv = t.to_vector<int64_t>();
  std::vector<float> logits(tv.size() * 64, 0.0f);
  int64_t queries = 0;
  for (size_t i = 0; i < tv.size(); ++i) {
    if (tv[i] == kMqarIgnore) {
      logits[i * 64 + (i % 64)] = 50.0f;  // confidently wrong, but not counted
    } else {
      logits[i * 64 + size_t(tv[i])] = 5.0f;
      ++queries;
    }
  }
  ASSERT_EQ(queries, t.size(0) * 4);
  // The logits stand in for the hidden states, under an identity head.
  const Tensor l = from_vector<float>(logits, {t.size(0), t.size(1), 64});
  const LossOutput out = recipes::query_loss(l, t, [](const Tensor& h) { return h; });
  // Each query row: 5 on the target, 0 on the 63 others.
  EXPECT_NEAR(out.loss.item(), std::log(std::exp(5.0) + 63.0) - 5.0, 1e-5);
  ASSERT_EQ(out.metrics.size(), 1u);
  EXPECT_EQ(out.metrics[0].second, 1.0);
}

TEST(Mqar, TheQueryLossIsTheFullLogitsLossForEveryFamily) {
  // The head scores only the query rows; loss and every gradient are the
  // full logits' cross-entropy (which ignores the other rows).
  testing::TempDir tmp("mqar");
  for (const std::string model :
       {"gpt { vocab_size: 64 block_size: 32 n_layer: 1 n_head: 2 n_embd: 16 mlp: false }",
        "hyena { vocab_size: 64 block_size: 32 n_layer: 1 n_embd: 16 filter_order: 8 }",
        "mamba { vocab_size: 64 n_layer: 1 n_embd: 16 d_state: 4 }"}) {
    SCOPED_TRACE(model);
    const config::Config cfg = parse_config(mqar_config(tmp.path().string(), model, 1), "t");
    parallel::ParallelContext ctx;
    recipes::Recipe r = recipes::make_recipe(cfg, ctx);
    Batch b = r.data(Split::Train)->next();
    const LossOutput q = r.loss(b);
    q.loss.backward();
    std::vector<std::vector<float>> grads;
    for (const auto& [name, p] : r.module->named_parameters())
      grads.push_back(p.grad().to_vector<float>());
    r.module->zero_grad();
    // The full logits through the module's forward, by the serial loss.
    Tensor full;
    if (auto* g = dynamic_cast<gpt::GPT*>(r.module.get())) full = g->forward(b.at("inputs"));
    if (auto* h = dynamic_cast<hyena::HyenaLM*>(r.module.get())) full = h->forward(b.at("inputs"));
    if (auto* m = dynamic_cast<mamba::MambaLM*>(r.module.get())) full = m->forward(b.at("inputs"));
    ASSERT_TRUE(full.defined());
    Tensor ref = cross_entropy(reshape(full, {-1, 64}), reshape(b.at("targets"), {-1}));
    ref.backward();
    EXPECT_NEAR(q.loss.item(), ref.item(), 1e-6 * std::abs(ref.item()));
    size_t i = 0;
    for (const auto& [name, p] : r.module->named_parameters()) {
      SCOPED_TRACE(name);
      const std::vector<float> want = p.grad().to_vector<float>();
      ASSERT_EQ(want.size(), grads[i].size());
      double scale = 0;
      for (float w : want) scale = std::max(scale, double(std::abs(w)));
      for (size_t j = 0; j < want.size(); ++j)
        ASSERT_NEAR(grads[i][j], want[j], 1e-5 * scale + 1e-9) << "element " << j;  // fp32 sums
      ++i;
    }
  }
}

TEST(Mqar, TrainingStopsEarlyAtTheTargetAccuracy) {
  // stop_at 0 is reached at the first validation: the run ends there, with
  // no checkpoint when checkpoint.save is false.
  testing::TempDir tmp("mqar");
  config::Config cfg = parse_config(
      mqar_config(tmp.path().string(), "mamba { n_layer: 1 n_embd: 16 d_state: 4 }", 50), "t");
  cfg.mutable_train()->set_eval_every(5);
  cfg.mutable_train()->set_eval_batches(1);
  cfg.mutable_train()->set_stop_metric("accuracy");
  cfg.mutable_train()->set_stop_at(0.0);
  cfg.mutable_checkpoint()->set_save(false);
  parallel::ParallelContext ctx;
  recipes::Recipe r = recipes::make_recipe(cfg, ctx);
  std::ostringstream log;
  TrainOptions opt;
  opt.out = &log;
  const TrainResult res = train(cfg, r, ctx, opt);
  EXPECT_TRUE(res.stopped_early);
  EXPECT_EQ(res.end_step, 5);
  EXPECT_EQ(res.losses.size(), 5u);
  EXPECT_NE(log.str().find("stopped at step 5: val accuracy reached 0"), std::string::npos)
      << log.str();
  EXPECT_TRUE(res.last_checkpoint.empty());
  EXPECT_FALSE(std::filesystem::exists(tmp.file("ckpt")));

  // Unreachable: every step runs.
  cfg.mutable_train()->set_stop_at(1.5);
  cfg.mutable_train()->set_steps(10);
  recipes::Recipe r2 = recipes::make_recipe(cfg, ctx);
  const TrainResult all = train(cfg, r2, ctx, opt);
  EXPECT_FALSE(all.stopped_early);
  EXPECT_EQ(all.end_step, 10);
}

TEST(Mqar, EarlyStoppingFieldsAreChecked) {
  testing::TempDir tmp("mqar");
  const std::string text =
      mqar_config(tmp.path().string(), "mamba { n_layer: 1 n_embd: 16 d_state: 4 }", 10);
  config::Config cfg = parse_config(text, "t");
  cfg.mutable_train()->set_stop_metric("accuracy");
  EXPECT_KEEL_ERROR(validate_config(cfg), "train.stop_at", "train.stop_metric");
  cfg.mutable_train()->set_stop_at(0.9);
  cfg.mutable_train()->set_eval_every(0);
  EXPECT_KEEL_ERROR(validate_config(cfg), "train.stop_metric", "eval_every > 0");
  // A metric the loss does not report, named with those it does.
  cfg.mutable_train()->set_eval_every(5);
  cfg.mutable_train()->set_stop_metric("perplexity");
  parallel::ParallelContext ctx;
  recipes::Recipe r = recipes::make_recipe(cfg, ctx);
  std::ostringstream log;
  TrainOptions opt;
  opt.out = &log;
  EXPECT_KEEL_ERROR(train(cfg, r, ctx, opt), "train.stop_metric 'perplexity'", "accuracy");
}

}  // namespace
}  // namespace keel::trainer
