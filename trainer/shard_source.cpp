#include "trainer/shard_source.h"

#include <filesystem>

#include "trainer/shard.h"
#include "trainer/tokenizer.h"

namespace keel::trainer {

namespace {

class ShardSource final : public DataSource {
 public:
  ShardSource(std::vector<std::string> files, const TokenLoaderOptions& o, const std::string& which,
              const std::string& tokenizer)
      : loader_(std::move(files), o) {
    KEEL_CHECK(loader_.tokenizer_id() == tokenizer, "data.shards.", which, ": shards were made",
               " with tokenizer '", loader_.tokenizer_id(), "' but data.tokenizer is '", tokenizer,
               "'");
  }
  Batch next() override {
    TokenBatch b = loader_.next();
    return Batch{{{"inputs", b.inputs}, {"targets", b.targets}}};
  }
  NamedInts position() const override {
    const LoaderPosition p = loader_.position();
    return {{"shard", p.shard}, {"offset", p.offset}, {"epoch", p.epoch}};
  }
  void set_position(const NamedInts& position) override {
    LoaderPosition p;
    for (const auto& [name, v] : position) {
      if (name == "shard")
        p.shard = v;
      else if (name == "offset")
        p.offset = v;
      else if (name == "epoch")
        p.epoch = v;
      else
        KEEL_FAIL("token shards: unknown data position '", name, "'");
    }
    loader_.set_position(p);
  }
  int64_t tokens_per_batch() const override { return loader_.tokens_per_batch(); }

 private:
  TokenLoader loader_;
};

}  // namespace

std::unique_ptr<DataSource> make_shard_source(const config::Config& cfg, Split split, int data_rank,
                                              int data_world) {
  const auto& d = cfg.data();
  KEEL_CHECK(d.has_shards(), "config: data.shards is missing (the token shards to train on)");
  const auto& list = split == Split::Train ? d.shards().train_files() : d.shards().val_files();
  const char* which = split == Split::Train ? "train_files" : "val_files";
  KEEL_CHECK(!list.empty(), "config: data.shards.", which, " is empty");
  TokenLoaderOptions o;
  o.batch = d.batch_size() / cfg.train().grad_accum();
  o.seq_len = d.seq_len();
  o.world = data_world;
  o.rank = data_rank;
  o.dtype = DType::I64;
  return std::make_unique<ShardSource>(std::vector<std::string>(list.begin(), list.end()), o, which,
                                       d.tokenizer());
}

bool has_val_shards(const config::Config& cfg) {
  return cfg.data().has_shards() && cfg.data().shards().val_files_size() > 0;
}

std::string assets_dir(const config::Config& cfg) {
  return cfg.data().assets_dir().empty() ? default_assets_dir() : cfg.data().assets_dir();
}

bool has_train_shards_on_disk(const config::Config& cfg) {
  const auto& d = cfg.data();
  return d.has_shards() && d.shards().train_files_size() > 0 &&
         std::filesystem::exists(d.shards().train_files(0));
}

int64_t data_vocab_size(const config::Config& cfg) {
  if (has_train_shards_on_disk(cfg))
    return TokenShard(cfg.data().shards().train_files(0)).vocab_size();
  return make_tokenizer(cfg.data().tokenizer(), assets_dir(cfg))->vocab_size();
}

}  // namespace keel::trainer
