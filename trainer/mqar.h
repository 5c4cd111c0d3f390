// Multi-query associative recall (MQAR), Zoology's synthetic recall task
// (Arora et al. 2023, "Zoology: Measuring and Improving Recall in
// Efficient Language Models"), generated in code and deterministic from
// the seed. One example of seq_len T over vocabulary V with P pairs:
//
//   positions [0, 2P): k_1 v_1 k_2 v_2 ... k_P v_P    keys distinct, from [1, V/2);
//                                                      values distinct, from [V/2, V)
//   positions [2P, T): key k_j again at 2P + 2 g_j, the gaps g_j distinct in
//                      [0, (T - 2P) / 2) and drawn without replacement with
//                      weights proportional to g^(power_a - 1), g = 1, 2, ...
//                      (so short distances are the likeliest); every other
//                      position holds a uniformly random token of [0, V)
//                      (or, without random_non_queries, token 0)
//   target at 2P + 2 g_j = v_j (the next token after the queried key), and
//   ignore_index (-100) everywhere else.
//
// Example i of a split is a pure function of (seed, split, i): Philox
// draws at offset i of the split's stream, so any example can be made
// alone, ranks make their own rows, and a data position is one index.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "trainer/config.h"
#include "trainer/workload.h"

namespace keel::trainer {

struct MqarSpec {
  int64_t vocab_size = 8192;
  int64_t seq_len = 64;
  int64_t num_kv_pairs = 8;
  double power_a = 0.01;
  uint64_t seed = 0;
  bool random_non_queries = true;  // false: token 0 between the queries

  // keel::Error naming the field (as data.synthetic.mqar.<field> or
  // data.seq_len) when the pairs do not fit: 4 P <= T (the context and as
  // many query slots), T even, and V/2 - 1 >= P keys and values.
  void validate() const;
};

constexpr int64_t kMqarIgnore = -100;

struct MqarExample {
  std::vector<int64_t> inputs;   // (T)
  std::vector<int64_t> targets;  // (T), kMqarIgnore except at the query positions
};

// Example `index` of the stream `stream` (0 train, 1 test).
MqarExample mqar_example(const MqarSpec& spec, uint64_t stream, uint64_t index);

// The spec of a config's data { synthetic { mqar } } at data.seq_len.
MqarSpec mqar_spec(const config::Config& cfg);

// This rank's rows of every global micro-batch (data.batch_size /
// train.grad_accum examples), walking the split's num_train (or num_test)
// examples in order and wrapping around; batches of "inputs" and
// "targets" (B / data ranks, T) i64.
std::unique_ptr<DataSource> make_mqar_source(const config::Config& cfg, Split split, int data_rank,
                                             int data_world);

}  // namespace keel::trainer
