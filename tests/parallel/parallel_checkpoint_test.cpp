// Collective (parallel HDF5) checkpoints under mpirun, any world size:
// each rank writes an arbitrary flat element range of tensors of every rank
// 0..4 (ranges that start and end mid-row, empty ranges, zero-size tensors),
// and the file holds exactly the full logical tensors: a single process
// reads them whole, and the group reads them back with another partition.
// Saves are atomic and refuse inconsistent input on every rank alike.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "parallel/data_parallel.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/group_temp_dir.h"
#include "tests/testing/temp_dir.h"
#include "trainer/checkpoint.h"

namespace keel::trainer {
namespace {

namespace fs = std::filesystem;
using keel::testing::to_doubles;

class ParallelCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = parallel::mpi_world();
    W_ = world_->size();
    rank_ = world_->rank();
    group_dir_ = std::make_unique<keel::testing::GroupTempDir>(*world_, "pckpt");
    dir_ = group_dir_->path();
  }
  void TearDown() override { group_dir_.reset(); }

  // The same tensors on every rank (a fixed seed per tensor).
  struct Named {
    std::string name;
    Tensor full;
  };
  std::vector<Named> tensors() const {
    std::vector<Named> out;
    const std::vector<Shape> shapes = {{},        {7},          {3, 5},   {2, 3, 4},
                                       {2, 0, 3}, {4, 3, 2, 5}, {1, 1, 9}};
    for (size_t i = 0; i < shapes.size(); ++i)
      out.push_back({"t" + std::to_string(i), keel::testing::uniform(shapes[i], 100 + i)});
    Tensor ids = arange(0, 24, 1, DType::I64).reshape({4, 6});  // (4, 6)
    out.push_back({"ids", ids});
    out.push_back({"half/bf16", keel::testing::uniform({5, 3}, 7).to(DType::BF16)});
    return out;
  }

  // Cut points of n elements into W ranges, uneven and varying with `salt`:
  // some ranges empty, most starting and ending mid-row.
  std::vector<int64_t> cuts(int64_t n, int salt) const {
    std::vector<int64_t> c(size_t(W_) + 1, 0);
    c[size_t(W_)] = n;
    for (int r = 1; r < W_; ++r) {
      int64_t x = (n * r * (3 + salt % 5)) / (W_ * 5) + (salt + r) % 3;
      c[size_t(r)] = std::clamp<int64_t>(x, c[size_t(r - 1)], n);
    }
    return c;
  }

  TensorPart part_of(const Tensor& full, int64_t begin, int64_t end) const {
    Tensor flat = full.contiguous().reshape({full.numel()});
    return range_part(full.sizes(), full.dtype(), begin, end,
                      flat.narrow(0, begin, end - begin).clone());
  }

  std::unique_ptr<parallel::Communicator> world_;
  int W_ = 1, rank_ = 0;
  std::unique_ptr<keel::testing::GroupTempDir> group_dir_;
  fs::path dir_;
};

// The flat element range [begin, end) a part made from a range holds: from
// its first box's first element to its last box's last (boxes in flat order).
std::pair<int64_t, int64_t> flat_range(const TensorPart& p) {
  if (p.boxes.empty()) return {0, 0};
  const Box& last = p.boxes.back();
  Shape end_index = last.offset;
  for (size_t d = 0; d < end_index.size(); ++d) end_index[d] += last.count[d] - 1;
  const std::pair<int64_t, int64_t> r{flat_index(p.shape, p.boxes.front().offset),
                                      flat_index(p.shape, end_index) + 1};
  EXPECT_EQ(boxes_numel(p.boxes), r.second - r.first) << "not one flat range";
  return r;
}

CheckpointParts with_meta(int64_t step) {
  CheckpointParts ck;
  ck.step = step;
  ck.meta_text = {{"config", "model { n_layer: 2 }"}, {"empty", ""}};
  ck.meta_int = {{"seed", 42}};
  ck.meta_float = {{"lr", 3e-4}};
  return ck;
}

TEST_F(ParallelCheckpointTest, RangesRoundTripThroughTheFullTensors) {
  auto ts = tensors();
  CheckpointParts ck = with_meta(17);
  int salt = 0;
  for (const auto& t : ts) {
    auto c = cuts(t.full.numel(), salt++);
    ck.model.emplace_back(t.name, part_of(t.full, c[size_t(rank_)], c[size_t(rank_) + 1]));
    // The optimizer group with the opposite partition (rank r writes W-1-r's).
    const int o = W_ - 1 - rank_;
    ck.optim.emplace_back(t.name + "/m", part_of(t.full, c[size_t(o)], c[size_t(o) + 1]));
  }
  const std::string path = checkpoint_path(dir_.string(), 17);
  save_checkpoint(path, ck, *world_);
  EXPECT_TRUE(is_complete_checkpoint(path));

  // One process reads the whole tensors: exactly the originals.
  CheckpointData whole;
  for (const auto& t : ts) {
    whole.model.emplace_back(t.name, zeros(t.full.sizes(), t.full.dtype()));
    whole.optim.emplace_back(t.name + "/m", zeros(t.full.sizes(), t.full.dtype()));
  }
  whole.meta_text = {{"config", ""}, {"empty", "x"}};
  whole.meta_int = {{"seed", 0}};
  whole.meta_float = {{"lr", 0}};
  load_checkpoint(path, whole);
  EXPECT_EQ(whole.step, 17);
  for (size_t i = 0; i < ts.size(); ++i) {
    EXPECT_EQ(to_doubles(whole.model[i].second), to_doubles(ts[i].full)) << ts[i].name;
    EXPECT_EQ(to_doubles(whole.optim[i].second), to_doubles(ts[i].full)) << ts[i].name;
  }
  EXPECT_EQ(whole.meta_text[0].second, "model { n_layer: 2 }");
  EXPECT_EQ(whole.meta_text[1].second, "");
  EXPECT_EQ(whole.meta_int[0].second, 42);
  EXPECT_EQ(whole.meta_float[0].second, 3e-4);
  for (const auto& info : list_checkpoint(path))
    if (info.name == "/model/t5") {
      EXPECT_EQ(info.shape, (Shape{4, 3, 2, 5}));
    }

  // The group reads with another partition (and one rank reading all).
  CheckpointParts back;
  salt = 7;
  for (const auto& t : ts) {
    auto c = cuts(t.full.numel(), salt++);
    const int64_t b = c[size_t(rank_)], e = c[size_t(rank_) + 1];
    back.model.emplace_back(
        t.name, range_part(t.full.sizes(), t.full.dtype(), b, e, zeros({e - b}, t.full.dtype())));
    back.optim.emplace_back(t.name + "/m", whole_part(zeros(t.full.sizes(), t.full.dtype())));
  }
  back.meta_int = {{"seed", 0}};
  load_checkpoint(path, back, *world_);
  EXPECT_EQ(back.step, 17);
  EXPECT_EQ(back.meta_int[0].second, 42);
  for (size_t i = 0; i < ts.size(); ++i) {
    const TensorPart& p = back.model[i].second;
    const auto [begin, end] = flat_range(p);
    Tensor want =
        ts[i].full.contiguous().reshape({ts[i].full.numel()}).narrow(0, begin, end - begin);
    EXPECT_EQ(to_doubles(p.local), to_doubles(want)) << ts[i].name;
    EXPECT_EQ(to_doubles(back.optim[i].second.local), to_doubles(ts[i].full)) << ts[i].name;
  }
}

TEST_F(ParallelCheckpointTest, ReplicatedTensorsAreSplitEvenly) {
  Tensor t = keel::testing::uniform({5, 7}, 3);
  int64_t covered = 0;
  for (int r = 0; r < W_; ++r) {
    const auto [begin, end] = flat_range(replicated_part(t, r, W_));
    EXPECT_EQ(begin, covered);
    EXPECT_LE(end - begin, 35 / W_ + 1);
    covered = end;
  }
  EXPECT_EQ(covered, 35);
  CheckpointParts ck = with_meta(3);
  ck.model = {{"w", replicated_part(t, rank_, W_)}};
  const std::string path = checkpoint_path(dir_.string(), 3);
  save_checkpoint(path, ck, *world_);
  CheckpointData whole;
  whole.model = {{"w", zeros({5, 7})}};
  load_checkpoint(path, whole);
  EXPECT_EQ(to_doubles(whole.model[0].second), to_doubles(t));
}

// A save that fails (here: one rank's part lies outside its tensor) fails
// on every rank, names the rank, writes nothing and leaves the previous
// checkpoint at the same path as it was.
TEST_F(ParallelCheckpointTest, FailedSaveLeavesThePreviousCheckpoint) {
  Tensor t = keel::testing::uniform({4, 4}, 9);
  const std::string path = checkpoint_path(dir_.string(), 5);
  CheckpointParts good = with_meta(5);
  good.model = {{"w", replicated_part(t, rank_, W_)}};
  save_checkpoint(path, good, *world_);
  world_->barrier();

  const int bad_rank = W_ - 1;
  CheckpointParts bad = with_meta(5);
  Tensor other = keel::testing::uniform({4, 4}, 10);
  bad.model = {{"w", replicated_part(other, rank_, W_)}};
  if (rank_ == bad_rank)  // past the 16 elements
    bad.model[0].second =
        range_part(other.sizes(), other.dtype(), 16 * bad_rank / W_, 17, bad.model[0].second.local);
  std::string msg = keel::testing::error_of([&] { save_checkpoint(path, bad, *world_); });
  EXPECT_CONTAINS(msg, "rank " + std::to_string(bad_rank));
  if (rank_ == bad_rank) {
    EXPECT_CONTAINS(msg, "element range");
  }

  // Ranks that list different tensors are refused by name too.
  CheckpointParts odd = with_meta(5);
  odd.model = {{"w", replicated_part(other, rank_, W_)}};
  if (rank_ == bad_rank && W_ > 1) odd.model[0].first = "v";
  if (W_ > 1) {
    msg = keel::testing::error_of([&] { save_checkpoint(path, odd, *world_); });
    EXPECT_CONTAINS(msg, "rank " + std::to_string(bad_rank));
    EXPECT_CONTAINS(msg, "lists different tensors");
  }

  // Parts that leave elements unwritten.
  CheckpointParts gap = with_meta(5);
  gap.model = {{"w", range_part({4, 4}, DType::F32, 0, rank_ == 0 ? 3 : 0,
                                rank_ == 0 ? zeros({3}) : Tensor())}};
  msg = keel::testing::error_of([&] { save_checkpoint(path, gap, *world_); });
  EXPECT_CONTAINS(msg, "'w'");
  EXPECT_CONTAINS(msg, "cover");

  world_->barrier();
  CheckpointData check;
  check.model = {{"w", zeros({4, 4})}};
  load_checkpoint(path, check);
  EXPECT_EQ(to_doubles(check.model[0].second), to_doubles(t));
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST_F(ParallelCheckpointTest, LoadErrorsReachEveryRank) {
  CheckpointParts ck;
  ck.model = {{"w", whole_part(zeros({2}))}};
  std::string msg = keel::testing::error_of(
      [&] { load_checkpoint((dir_ / "missing.h5").string(), ck, *world_); });
  EXPECT_CONTAINS(msg, "missing.h5");

  // A tensor whose shape differs from the file's is named with both shapes.
  Tensor t = keel::testing::uniform({3, 2}, 1);
  CheckpointParts saved = with_meta(1);
  saved.model = {{"w", replicated_part(t, rank_, W_)}};
  const std::string path = checkpoint_path(dir_.string(), 1);
  save_checkpoint(path, saved, *world_);
  CheckpointParts wrong;
  wrong.model = {{"w", whole_part(zeros({2, 3}))}};
  msg = keel::testing::error_of([&] { load_checkpoint(path, wrong, *world_); });
  EXPECT_CONTAINS(msg, "(3, 2)");
  EXPECT_CONTAINS(msg, "(2, 3)");
}

}  // namespace
}  // namespace keel::trainer
