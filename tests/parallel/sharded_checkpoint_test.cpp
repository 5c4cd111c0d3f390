// Box-shaped collective checkpoints under mpirun (an even world: tp = 2,
// dp = world / 2, tp fastest): each rank saves its tensor-parallel shard of a
// dim-0, a dim-1 and a strided (qkv-like) parameter and of a 3-d strided
// one (its dp replica's even share of it), ZeRO-style uneven flat pieces of
// sharded parameters' moments, and its share of a replicated one. The file
// holds the logical tensors exactly: every rank reads them whole as a single
// process, and the group reads them back in another layout (dim-1 boxes for
// a dim-0 save, the other tp rank's shard, pieces of other shards). Random
// box layouts (any world size) save and load exactly, reads overlapping
// across ranks included. Parts that overlap or leave a gap across ranks are
// refused on every rank.
#include <gtest/gtest.h>

#include <filesystem>

#include "parallel/data_parallel.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/group_temp_dir.h"
#include "tests/testing/shards.h"
#include "tests/testing/temp_dir.h"
#include "trainer/checkpoint.h"

namespace keel::trainer {
namespace {

namespace fs = std::filesystem;
using keel::testing::expected_local;
using keel::testing::split_spec;
using keel::testing::to_doubles;

constexpr int kTp = 2;

class ShardedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = parallel::mpi_world();
    W_ = world_->size();
    rank_ = world_->rank();
    if (W_ % kTp != 0) GTEST_SKIP() << "needs an even world (tp = 2), got " << W_;
    tp_ = rank_ % kTp;
    dp_ = rank_ / kTp;
    dp_size_ = W_ / kTp;
    group_dir_ = std::make_unique<keel::testing::GroupTempDir>(*world_, "sckpt");
    dir_ = group_dir_->path();
  }
  void TearDown() override { group_dir_.reset(); }

  // A logical tensor (the same on every rank) and how it is split over tp.
  struct Sharded {
    std::string name;
    Tensor logical;
    int64_t dim, stride;
    nn::ParamSpec spec(int tp) const { return split_spec(logical.sizes(), dim, stride, tp, kTp); }
  };
  static std::vector<Sharded> params() {
    return {{"a.weight", keel::testing::uniform({8, 6}, 51), 0, 1},
            {"b.weight", keel::testing::uniform({6, 8}, 52), 1, 1},
            {"attn.qkv.weight", keel::testing::uniform({12, 4}, 53), 0, 3},
            {"e.weight", keel::testing::uniform({2, 12, 3}, 54), 1, 3}};
  }
  // The moments (ZeRO-1 state) of two of them, sharded as their parameters.
  static std::vector<Sharded> moments() {
    return {{"attn.qkv.weight/m", keel::testing::uniform({12, 4}, 61), 0, 3},
            {"b.weight/m", keel::testing::uniform({6, 8}, 62), 1, 1}};
  }

  // Uneven cut points of a shard's n local elements over the dp replicas,
  // mid-row where the sizes allow.
  std::vector<int64_t> cuts(int64_t n) const {
    std::vector<int64_t> c(size_t(dp_size_) + 1, n);
    c[0] = 0;
    for (int d = 1; d < dp_size_; ++d) c[size_t(d)] = std::min(n, n * d / dp_size_ + 1);
    return c;
  }

  // This rank's ZeRO piece of its shard of `t`: local elements [c_dp, c_dp+1).
  TensorPart zero_piece(const Sharded& t) const {
    const nn::ParamSpec s = t.spec(tp_);
    Tensor local = expected_local(t.logical, s);
    auto c = cuts(local.numel());
    const int64_t lo = c[size_t(dp_)], hi = c[size_t(dp_) + 1];
    return box_part(t.logical.sizes(), DType::F32, nn::local_range_boxes(s, lo, hi),
                    local.reshape({local.numel()}).narrow(0, lo, hi - lo).clone());
  }

  CheckpointParts saved_layout() const {
    CheckpointParts ck;
    ck.step = 12;
    for (const auto& t : params()) {
      const nn::ParamSpec s = t.spec(tp_);
      ck.model.emplace_back(t.name, shard_part(s, expected_local(t.logical, s), dp_, dp_size_));
    }
    ck.model.emplace_back("ln.weight", replicated_part(ln(), rank_, W_));
    for (const auto& t : moments()) ck.optim.emplace_back(t.name, zero_piece(t));
    ck.meta_int = {{"seed", 5}};
    return ck;
  }
  static Tensor ln() { return keel::testing::uniform({5}, 70); }

  std::unique_ptr<parallel::Communicator> world_;
  int W_ = 1, rank_ = 0, tp_ = 0, dp_ = 0, dp_size_ = 1;
  std::unique_ptr<keel::testing::GroupTempDir> group_dir_;
  fs::path dir_;
};

TEST_F(ShardedCheckpointTest, ShardsRoundTripIntoOneProcessAndOtherLayouts) {
  const std::string path = checkpoint_path(dir_.string(), 12);
  save_checkpoint(path, saved_layout(), *world_);
  EXPECT_TRUE(is_complete_checkpoint(path));

  // Every rank alone (serial driver, whole tensors): exactly the logical tensors.
  CheckpointData whole;
  for (const auto& t : params()) whole.model.emplace_back(t.name, zeros(t.logical.sizes()));
  whole.model.emplace_back("ln.weight", zeros({5}));
  for (const auto& t : moments()) whole.optim.emplace_back(t.name, zeros(t.logical.sizes()));
  whole.meta_int = {{"seed", 0}};
  load_checkpoint(path, whole);
  EXPECT_EQ(whole.step, 12);
  EXPECT_EQ(whole.meta_int[0].second, 5);
  for (size_t i = 0; i < params().size(); ++i)
    EXPECT_EQ(to_doubles(whole.model[i].second), to_doubles(params()[i].logical))
        << params()[i].name;
  EXPECT_EQ(to_doubles(whole.model.back().second), to_doubles(ln()));
  for (size_t i = 0; i < moments().size(); ++i)
    EXPECT_EQ(to_doubles(whole.optim[i].second), to_doubles(moments()[i].logical))
        << moments()[i].name;
  world_->barrier();  // every rank has read alone before the group reads

  // The group in another layout: dim-1 boxes for the dim-0 save and dim-0
  // for the dim-1 one, the other tp rank's shards of the strided ones, and
  // pieces (overlapping, as loads may) of the other tp rank's moment shards.
  const int other = kTp - 1 - tp_;
  std::vector<nn::ParamSpec> specs = {split_spec({8, 6}, 1, 1, other, kTp),
                                      split_spec({6, 8}, 0, 1, tp_, kTp), params()[2].spec(other),
                                      params()[3].spec(other)};
  CheckpointParts back;
  for (size_t i = 0; i < specs.size(); ++i)
    back.model.emplace_back(params()[i].name,
                            shard_part(specs[i], full(nn::local_shape(specs[i]), -1.0)));
  back.model.emplace_back("ln.weight", whole_part(zeros({5})));
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const auto& t : moments()) {
    const nn::ParamSpec s = t.spec(other);
    const int64_t n = shape_numel(nn::local_shape(s));
    const int64_t lo = (n * rank_) / (2 * W_) + 1, hi = n - rank_ % 3;
    ranges.emplace_back(lo, hi);
    back.optim.emplace_back(t.name, box_part(t.logical.sizes(), DType::F32,
                                             nn::local_range_boxes(s, lo, hi), zeros({hi - lo})));
  }
  load_checkpoint(path, back, *world_);
  EXPECT_EQ(back.step, 12);
  for (size_t i = 0; i < specs.size(); ++i)
    EXPECT_EQ(to_doubles(back.model[i].second.local),
              to_doubles(expected_local(params()[i].logical, specs[i])))
        << params()[i].name << " as " << nn::describe(specs[i]);
  EXPECT_EQ(to_doubles(back.model.back().second.local), to_doubles(ln()));
  for (size_t i = 0; i < moments().size(); ++i) {
    Tensor local = expected_local(moments()[i].logical, moments()[i].spec(other));
    const auto [lo, hi] = ranges[i];
    EXPECT_EQ(to_doubles(back.optim[i].second.local),
              to_doubles(local.reshape({local.numel()}).narrow(0, lo, hi - lo)))
        << moments()[i].name;
  }
}

// Pseudo-random box layouts at any world size: partitions of the tensor into
// blocks owned by random ranks save exactly, and reads of random box sets
// (disjoint within a rank, overlapping across ranks: the pattern Open MPI's
// aggregated collective reads get wrong, see make_io) read exactly.
class RandomBoxesTest : public ShardedCheckpointTest {
 protected:
  void SetUp() override {
    world_ = parallel::mpi_world();
    W_ = world_->size();
    rank_ = world_->rank();
    group_dir_ = std::make_unique<keel::testing::GroupTempDir>(*world_, "rbox");
    dir_ = group_dir_->path();
  }
};

TEST_F(RandomBoxesTest, RandomLayoutsSaveAndLoadExactly) {
  const Shape shape{12, 8};
  const int64_t rows = shape[0], cols = shape[1];
  Tensor t = arange(0, double(rows * cols), 1, DType::F32).view(shape);  // (12, 8)
  // The values of `t` at the boxes' union, in row-major order (empty: undefined).
  auto values_at = [&](const std::vector<Box>& boxes) {
    std::vector<float> v;
    for (int64_t i : keel::testing::union_order(shape, boxes)) v.push_back(float(i));
    return v.empty() ? Tensor() : from_vector<float>(v, {int64_t(v.size())});
  };
  const std::string path = (dir_ / "random.h5").string();
  for (uint32_t seed = 1; seed <= 30; ++seed) {
    // The same draws on every rank: row blocks cut at random columns, each
    // block owned by a random rank.
    uint32_t x = seed * 2654435761u;
    auto draw = [&x](int64_t n) {
      x = x * 1664525u + 1013904223u;
      return int64_t((x >> 8) % uint32_t(n));
    };
    std::vector<Box> mine;
    for (int64_t r = 0; r < rows;) {
      const int64_t h = std::min(rows - r, 1 + draw(4));
      for (int64_t c = 0; c < cols;) {
        const int64_t w = 1 + draw(cols - c);
        if (draw(W_) == rank_) mine.push_back(Box{{r, c}, {h, w}});
        c += w;
      }
      r += h;
    }
    CheckpointParts ck;
    ck.model = {{"w", box_part(shape, DType::F32, mine, values_at(mine))}};
    save_checkpoint(path, ck, *world_);
    CheckpointData whole;
    whole.model = {{"w", zeros(shape)}};
    load_checkpoint(path, whole);
    ASSERT_EQ(to_doubles(whole.model[0].second), to_doubles(t)) << "seed " << seed;

    // Reads: this rank's own random blocks (a different draw per rank).
    uint32_t y = seed * 40503u + uint32_t(rank_) * 2246822519u;
    auto mine_draw = [&y](int64_t n) {
      y = y * 1664525u + 1013904223u;
      return int64_t((y >> 8) % uint32_t(n));
    };
    std::vector<Box> reads;
    for (int64_t r = mine_draw(3); r < rows;) {
      const int64_t h = std::min(rows - r, 1 + mine_draw(3)), c = mine_draw(cols);
      reads.push_back(Box{{r, c}, {h, 1 + mine_draw(cols - c)}});
      r += h + mine_draw(3);
    }
    Tensor want = values_at(reads);
    CheckpointParts back;
    back.model = {
        {"w", box_part(shape, DType::F32, reads, want.defined() ? zeros(want.sizes()) : Tensor())}};
    load_checkpoint(path, back, *world_);
    if (want.defined()) {
      ASSERT_EQ(to_doubles(back.model[0].second.local), to_doubles(want)) << "seed " << seed;
    }
    world_->barrier();  // every rank is done with the file before the next save replaces it
  }
}

// Parts that write an element twice or never are refused on every rank,
// naming the tensor (and for an overlap both ranks and their boxes); the
// previous checkpoint stays and no temporary is left.
TEST_F(ShardedCheckpointTest, OverlapsAndGapsAcrossRanksAreRefused) {
  const std::string path = checkpoint_path(dir_.string(), 12);
  save_checkpoint(path, saved_layout(), *world_);
  world_->barrier();

  // Every tp rank writes shard 0 of a.weight: tp ranks 0 and 1 overlap
  // (within a dp replica group the shares are disjoint).
  CheckpointParts overlap = saved_layout();
  const nn::ParamSpec first = params()[0].spec(0);
  overlap.model[0].second =
      shard_part(first, expected_local(params()[0].logical, first), dp_, dp_size_);
  std::string msg = keel::testing::error_of([&] { save_checkpoint(path, overlap, *world_); });
  EXPECT_CONTAINS(msg, "model tensor 'a.weight' overlap");
  EXPECT_CONTAINS(msg, "rank 0's box");
  EXPECT_CONTAINS(msg, "rank 1's box");
  EXPECT_CONTAINS(msg, "cover each tensor once");

  // The last rank leaves its piece of a moment out.
  CheckpointParts gap = saved_layout();
  if (rank_ == W_ - 1) gap.optim[1].second = box_part({6, 8}, DType::F32, {}, Tensor());
  msg = keel::testing::error_of([&] { save_checkpoint(path, gap, *world_); });
  EXPECT_CONTAINS(msg, "optim tensor 'b.weight/m'");
  EXPECT_CONTAINS(msg, "but it has 48");
  EXPECT_CONTAINS(msg, "cover");

  // A rank whose own boxes overlap is named by every rank.
  CheckpointParts mine = saved_layout();
  if (rank_ == W_ - 1)
    mine.model[1].second =
        box_part({6, 8}, DType::F32, {Box{{0, 0}, {2, 8}}, Box{{1, 0}, {1, 8}}}, zeros({24}));
  msg = keel::testing::error_of([&] { save_checkpoint(path, mine, *world_); });
  EXPECT_CONTAINS(msg, "rank " + std::to_string(W_ - 1));
  if (rank_ == W_ - 1) {
    EXPECT_CONTAINS(msg, "boxes [0:2, 0:8] and [1:2, 0:8] overlap");
  }

  world_->barrier();
  CheckpointData check;
  check.model = {{"a.weight", zeros({8, 6})}};
  load_checkpoint(path, check);
  EXPECT_EQ(to_doubles(check.model[0].second), to_doubles(params()[0].logical));
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

}  // namespace
}  // namespace keel::trainer
