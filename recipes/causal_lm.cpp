#include "recipes/causal_lm.h"

#include "trainer/shard_source.h"

namespace keel::recipes {

int64_t lm_vocab_size(const config::Config& cfg, int64_t configured, const char* field) {
  if (configured <= 0) return trainer::data_vocab_size(cfg);
  if (trainer::has_train_shards_on_disk(cfg)) {
    const int64_t data_vocab = trainer::data_vocab_size(cfg);
    KEEL_CHECK(configured >= data_vocab, "config: ", field, " ", configured,
               " is smaller than the data's vocabulary (", data_vocab, ")");
  }
  return configured;
}

void add_shard_data(Recipe& r, const config::Config& cfg, const parallel::ParallelContext& ctx) {
  const int data_rank = ctx.data_rank(), data_world = ctx.data_world();
  r.data = [cfg, data_rank, data_world](trainer::Split split) {
    return trainer::make_shard_source(cfg, split, data_rank, data_world);
  };
  r.has_val = [cfg] { return trainer::has_val_shards(cfg); };
}

}  // namespace keel::recipes
