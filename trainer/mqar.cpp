#include "trainer/mqar.h"

#include <cmath>
#include <numeric>

#include "core/philox.h"

namespace keel::trainer {

void MqarSpec::validate() const {
  KEEL_CHECK(num_kv_pairs > 0, "config: data.synthetic.mqar.num_kv_pairs must be positive, got ",
             num_kv_pairs);
  KEEL_CHECK(seq_len % 2 == 0, "config: data.seq_len ", seq_len,
             " must be even for MQAR (queries sit on every other position)");
  KEEL_CHECK(4 * num_kv_pairs <= seq_len, "config: data.synthetic.mqar.num_kv_pairs ", num_kv_pairs,
             " is too many for data.seq_len ", seq_len,
             ": the pairs and their queries need 4 * num_kv_pairs <= seq_len");
  KEEL_CHECK(vocab_size / 2 - 1 >= num_kv_pairs, "config: data.synthetic.mqar.vocab_size ",
             vocab_size, " is too small for ", num_kv_pairs,
             " pairs: keys come from [1, vocab_size / 2), values from [vocab_size / 2, "
             "vocab_size), so it needs vocab_size >= ",
             2 * (num_kv_pairs + 1));
  KEEL_CHECK(power_a > 0 && power_a <= 1,
             "config: data.synthetic.mqar.power_a must be in (0, 1], got ", power_a);
}

namespace {

// Uniform draws in [0, 1) from one example's Philox stream, in order.
class Draws {
 public:
  Draws(uint64_t seed, uint64_t offset) : seed_(seed), offset_(offset) {}
  double next() { return 1.0 - double(philox_uniform_at(seed_, offset_, i_++)); }
  // Uniform integer in [0, n).
  int64_t below(int64_t n) { return std::min<int64_t>(int64_t(next() * double(n)), n - 1); }

 private:
  uint64_t seed_, offset_, i_ = 0;
};

// `count` distinct values of [lo, hi), as a partial Fisher-Yates shuffle.
std::vector<int64_t> distinct(Draws& r, int64_t lo, int64_t hi, int64_t count) {
  std::vector<int64_t> pool(static_cast<size_t>(hi - lo));
  std::iota(pool.begin(), pool.end(), lo);
  for (int64_t j = 0; j < count; ++j) {
    const int64_t k = j + r.below(int64_t(pool.size()) - j);
    std::swap(pool[size_t(j)], pool[size_t(k)]);
  }
  pool.resize(size_t(count));
  return pool;
}

}  // namespace

MqarExample mqar_example(const MqarSpec& s, uint64_t stream, uint64_t index) {
  const int64_t T = s.seq_len, P = s.num_kv_pairs, V = s.vocab_size, half = V / 2;
  // One Philox stream per (seed, split): the seed's two halves keep splits apart.
  Draws r(s.seed * 2 + stream, index);
  const std::vector<int64_t> keys = distinct(r, 1, half, P), values = distinct(r, half, V, P);
  MqarExample ex;
  ex.inputs.assign(size_t(T), -1);
  ex.targets.assign(size_t(T), kMqarIgnore);
  for (int64_t j = 0; j < P; ++j) {
    ex.inputs[size_t(2 * j)] = keys[size_t(j)];
    ex.inputs[size_t(2 * j + 1)] = values[size_t(j)];
  }
  // Gaps without replacement, weight (g + 1)^(a - 1) for gap g.
  const int64_t space = (T - 2 * P) / 2;
  std::vector<double> w(static_cast<size_t>(space));
  for (int64_t g = 0; g < space; ++g) w[size_t(g)] = std::pow(double(g + 1), s.power_a - 1.0);
  for (int64_t j = 0; j < P; ++j) {
    double total = 0;
    for (double x : w) total += x;
    const double pick = r.next() * total;
    int64_t g = -1;
    double acc = 0;
    for (int64_t c = 0; c < space; ++c) {
      if (w[size_t(c)] == 0) continue;
      g = c;  // the last free gap, should rounding run past the end
      acc += w[size_t(c)];
      if (pick < acc) break;
    }
    w[size_t(g)] = 0;
    const int64_t pos = 2 * P + 2 * g;
    ex.inputs[size_t(pos)] = keys[size_t(j)];
    ex.targets[size_t(pos)] = values[size_t(j)];
  }
  for (int64_t& t : ex.inputs)
    if (t < 0) t = s.random_non_queries ? r.below(V) : 0;  // between the queries
  return ex;
}

MqarSpec mqar_spec(const config::Config& cfg) {
  const auto& m = cfg.data().synthetic().mqar();
  MqarSpec s;
  s.vocab_size = m.vocab_size();
  s.seq_len = cfg.data().seq_len();
  s.num_kv_pairs = m.num_kv_pairs();
  s.power_a = m.power_a();
  s.seed = m.seed();
  s.random_non_queries = m.random_non_queries();
  return s;
}

namespace {

class MqarSource : public DataSource {
 public:
  MqarSource(const MqarSpec& spec, uint64_t stream, int64_t examples, int64_t global_batch,
             int data_rank, int data_world)
      : spec_(spec),
        stream_(stream),
        examples_(examples),
        global_(global_batch),
        rows_(global_batch / data_world),
        first_(int64_t(data_rank) * (global_batch / data_world)) {}

  Batch next() override {
    const int64_t T = spec_.seq_len;
    std::vector<int64_t> in(size_t(rows_ * T)), tg(size_t(rows_ * T));
    for (int64_t b = 0; b < rows_; ++b) {
      const uint64_t i = uint64_t((next_ + first_ + b) % examples_);
      MqarExample ex = mqar_example(spec_, stream_, i);
      std::copy(ex.inputs.begin(), ex.inputs.end(), in.begin() + b * T);
      std::copy(ex.targets.begin(), ex.targets.end(), tg.begin() + b * T);
    }
    next_ = (next_ + global_) % examples_;
    return Batch{{{"inputs", from_vector<int64_t>(in, {rows_, T})},
                  {"targets", from_vector<int64_t>(tg, {rows_, T})}}};
  }
  NamedInts position() const override { return {{"example", next_}}; }
  void set_position(const NamedInts& p) override {
    KEEL_CHECK(
        p.size() == 1 && p[0].first == "example" && p[0].second >= 0 && p[0].second < examples_,
        "MQAR data: the checkpoint's data position does not fit ", examples_,
        " examples (expected one 'example' index below it)");
    next_ = p[0].second;
  }
  int64_t tokens_per_batch() const override { return global_ * spec_.seq_len; }

 private:
  MqarSpec spec_;
  uint64_t stream_;
  int64_t examples_, global_, rows_, first_;
  int64_t next_ = 0;  // index of the first example of the next global batch
};

}  // namespace

std::unique_ptr<DataSource> make_mqar_source(const config::Config& cfg, Split split, int data_rank,
                                             int data_world) {
  const MqarSpec spec = mqar_spec(cfg);
  spec.validate();
  const auto& m = cfg.data().synthetic().mqar();
  const int64_t examples = split == Split::Train ? m.num_train() : m.num_test();
  KEEL_CHECK(examples > 0, "config: data.synthetic.mqar.",
             split == Split::Train ? "num_train" : "num_test", " must be positive, got ", examples);
  const int64_t global = cfg.data().batch_size() / cfg.train().grad_accum();
  return std::make_unique<MqarSource>(spec, split == Split::Train ? 0 : 1, examples, global,
                                      data_rank, data_world);
}

}  // namespace keel::trainer
