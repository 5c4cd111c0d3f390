// The token-shard data source (data { shards { ... } }): batches of
// "inputs" and "targets" (B / data ranks, T), targets shifted by one token,
// from the files `keel prepare` writes. Also the vocabulary a model over
// this data needs when its config leaves it 0.
#pragma once

#include <memory>

#include "trainer/config.h"
#include "trainer/workload.h"

namespace keel::trainer {

// This rank's rows (data_rank of data_world) of every global micro-batch
// (data.batch_size / train.grad_accum sequences of data.seq_len) from the
// split's files. A shard made with another tokenizer than data.tokenizer is
// refused, naming both.
std::unique_ptr<DataSource> make_shard_source(const config::Config& cfg, Split split, int data_rank,
                                              int data_world);

// Whether the config names validation shards.
bool has_val_shards(const config::Config& cfg);

// Whether the first train shard exists (the vocabulary can be read from it).
bool has_train_shards_on_disk(const config::Config& cfg);

// The vocabulary the data's tokens come from: the first train shard's
// header when it can be read, else data.tokenizer's (a checkpoint evaluated
// where its shards are gone).
int64_t data_vocab_size(const config::Config& cfg);

// data.assets_dir, or the default assets directory when it is empty.
std::string assets_dir(const config::Config& cfg);

}  // namespace keel::trainer
