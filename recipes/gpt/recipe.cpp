#include "recipes/gpt/recipe.h"

#include "recipes/gpt/generate.h"
#include "trainer/shard_source.h"

namespace keel::gpt {

using trainer::check;
using trainer::require;

void validate_config(const config::Config& cfg) {
  const auto& m = cfg.model().gpt();
  require(m.has_block_size(), "model.gpt.block_size");
  require(m.has_n_layer(), "model.gpt.n_layer");
  require(m.has_n_head(), "model.gpt.n_head");
  require(m.has_n_embd(), "model.gpt.n_embd");
  check(m.vocab_size() >= 0, "model.gpt.vocab_size", "must be >= 0 (0: from the data)");
  check(m.padded_vocab_size() >= 0, "model.gpt.padded_vocab_size",
        "must be >= 0 (0: the vocabulary rounded up to a multiple of 128)");
  check(m.block_size() > 0, "model.gpt.block_size", "must be positive");
  check(m.n_layer() > 0, "model.gpt.n_layer", "must be positive");
  check(m.n_head() > 0, "model.gpt.n_head", "must be positive");
  check(m.n_embd() > 0 && m.n_embd() % m.n_head() == 0, "model.gpt.n_embd",
        "must be a positive multiple of model.gpt.n_head");
  check(m.dropout() >= 0 && m.dropout() < 1, "model.gpt.dropout", "must be in [0, 1)");
  check(m.init_std() > 0, "model.gpt.init_std", "must be positive");
  check(cfg.data().seq_len() <= m.block_size(), "data.seq_len",
        "must be in [1, model.gpt.block_size]");
  const auto task = cfg.task().kind_case();
  check(task == config::Task::KIND_NOT_SET || task == config::Task::kCausalLm, "task",
        "must be causal_lm for the gpt family");
  check(cfg.data().has_shards(), "data", "must be token shards (data { shards { ... } }) for gpt");
  // The layouts this family can run: data and tensor parallelism (context
  // and expert parallelism for GPT are their own issues).
  const auto& p = cfg.parallel();
  for (auto [v, name] : {std::pair{p.cp(), "parallel.cp"}, {p.ep(), "parallel.ep"}})
    check(v == 1, name, "must be 1: the gpt family does not shard over cp or ep yet");
  // The vocabulary-parallel loss and embedding have no device path yet.
  check(p.tp() == 1 || cfg.train().device() == "cpu", "parallel.tp",
        "> 1 runs on the CPU only so far (train.device is '" + cfg.train().device() + "')");
  check(m.n_head() % p.tp() == 0, "model.gpt.n_head",
        "must divide by parallel.tp (" + std::to_string(p.tp()) + "): each rank holds whole heads");
}

GptConfig gpt_config(const config::Config& cfg) {
  const auto& m = cfg.model().gpt();
  GptConfig c;
  c.vocab_size = m.vocab_size() > 0 ? m.vocab_size() : trainer::data_vocab_size(cfg);
  if (m.vocab_size() > 0 && trainer::has_train_shards_on_disk(cfg)) {
    const int64_t data_vocab = trainer::data_vocab_size(cfg);
    KEEL_CHECK(c.vocab_size >= data_vocab, "config: model.gpt.vocab_size ", c.vocab_size,
               " is smaller than the data's vocabulary (", data_vocab, ")");
  }
  c.padded_vocab_size = m.padded_vocab_size();
  c.block_size = m.block_size();
  c.n_layer = m.n_layer();
  c.n_head = m.n_head();
  c.n_embd = m.n_embd();
  c.dropout = m.dropout();
  c.bias = m.bias();
  c.init_std = m.init_std();
  c.checkpoint_activations = cfg.model().checkpoint_activations();
  c.sequence_parallel = cfg.parallel().sequence_parallel();
  return c;
}

recipes::Recipe make_recipe(const config::Config& cfg, parallel::ParallelContext& ctx) {
  auto model =
      std::make_shared<GPT>(gpt_config(cfg), cfg.train().seed(),
                            nn::DropoutStreams{&ctx.rng(parallel::RngRegion::Replicated),
                                               &ctx.rng(parallel::RngRegion::ModelParallel)},
                            &ctx);
  recipes::Recipe r;
  r.module = model;
  r.loss = [model](const trainer::Batch& b) {
    return trainer::LossOutput{model->loss(b.at("inputs"), b.at("targets")), {}};
  };
  const int data_rank = ctx.data_rank(), data_world = ctx.data_world();
  r.data = [cfg, data_rank, data_world](trainer::Split split) {
    return trainer::make_shard_source(cfg, split, data_rank, data_world);
  };
  r.has_val = [cfg] { return trainer::has_val_shards(cfg); };
  r.sample = [model](std::vector<int32_t> prompt, const recipes::SampleOptions& o) {
    return generate(*model, std::move(prompt), o);
  };
  return r;
}

}  // namespace keel::gpt
