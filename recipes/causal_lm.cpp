#include "recipes/causal_lm.h"

#include "trainer/mqar.h"
#include "trainer/shard_source.h"

namespace keel::recipes {

int64_t lm_vocab_size(const config::Config& cfg, int64_t configured, const char* field) {
  const bool synthetic = cfg.data().has_synthetic();
  if (configured <= 0)
    return synthetic ? cfg.data().synthetic().mqar().vocab_size() : trainer::data_vocab_size(cfg);
  if (synthetic || trainer::has_train_shards_on_disk(cfg)) {
    const int64_t data_vocab =
        synthetic ? cfg.data().synthetic().mqar().vocab_size() : trainer::data_vocab_size(cfg);
    KEEL_CHECK(configured >= data_vocab, "config: ", field, " ", configured,
               " is smaller than the data's vocabulary (", data_vocab, ")");
  }
  return configured;
}

void check_lm_task(const config::Config& cfg, const char* family) {
  const std::string f = family;
  switch (cfg.task().kind_case()) {
    case config::Task::KIND_NOT_SET:
    case config::Task::kCausalLm:
      trainer::check(cfg.data().has_shards(), "data",
                     "must be token shards (data { shards { ... } }) for causal_lm with " + f);
      break;
    case config::Task::kMqar:
      trainer::check(cfg.data().has_synthetic() && cfg.data().synthetic().has_mqar(), "data",
                     "must be data { synthetic { mqar { ... } } } for task mqar");
      trainer::mqar_spec(cfg).validate();
      break;
    default:
      trainer::check(false, "task", "must be causal_lm or mqar for the " + f + " family");
  }
}

void check_data_parallel_only(const config::Config& cfg, const char* family) {
  const std::string f = family;
  const auto& p = cfg.parallel();
  for (auto [v, name] :
       {std::pair{p.tp(), "parallel.tp"}, {p.cp(), "parallel.cp"}, {p.ep(), "parallel.ep"}})
    trainer::check(v == 1, name, "must be 1: the " + f + " family shards over dp only so far");
  trainer::check(!p.sequence_parallel(), "parallel.sequence_parallel",
                 "must be false: the " + f + " family has no tensor parallelism yet");
}

void add_lm_data(Recipe& r, const config::Config& cfg, const parallel::ParallelContext& ctx) {
  const int data_rank = ctx.data_rank(), data_world = ctx.data_world();
  if (cfg.data().has_synthetic()) {
    r.data = [cfg, data_rank, data_world](trainer::Split split) {
      return trainer::make_mqar_source(cfg, split, data_rank, data_world);
    };
    r.has_val = [cfg] { return cfg.data().synthetic().mqar().num_test() > 0; };
    return;
  }
  r.data = [cfg, data_rank, data_world](trainer::Split split) {
    return trainer::make_shard_source(cfg, split, data_rank, data_world);
  };
  r.has_val = [cfg] { return trainer::has_val_shards(cfg); };
}

trainer::LossOutput query_loss(const Tensor& hidden, const Tensor& targets, const HeadFn& head) {
  KEEL_CHECK(hidden.dim() == 3 && targets.dim() == 2 && hidden.size(0) == targets.size(0) &&
                 hidden.size(1) == targets.size(1),
             "query loss: hidden states ", hidden.describe(), " do not match targets ",
             targets.describe());
  // The rows with a target, found on the host (the targets are a few KB).
  const std::vector<int64_t> t = targets.to(Device::cpu()).to(DType::I64).to_vector<int64_t>();
  std::vector<int64_t> rows, want;
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i] != trainer::kMqarIgnore) {
      rows.push_back(int64_t(i));
      want.push_back(t[i]);
    }
  KEEL_CHECK(!rows.empty(), "query loss: the batch ", targets.describe(),
             " has no position with a target");
  const int64_t R = int64_t(rows.size());
  Tensor idx = from_vector<int64_t>(rows, {R}).to(hidden.device());
  Tensor h = index_select(reshape(hidden, {-1, hidden.size(2)}), 0, idx);  // (R, C)
  Tensor logits = head(h);                                                 // (R, V)
  Tensor target = from_vector<int64_t>(want, {R}).to(targets.device()).to(targets.dtype());
  trainer::LossOutput out{cross_entropy(logits, target), {}};
  NoGradGuard no_grad;
  const std::vector<int64_t> got =
      max(logits.detach(), 1).second.to(Device::cpu()).to(DType::I64).to_vector<int64_t>();
  int64_t right = 0;
  for (size_t i = 0; i < got.size(); ++i) right += got[i] == want[i];
  out.metrics.emplace_back("accuracy", double(right) / double(R));
  return out;
}

}  // namespace keel::recipes
