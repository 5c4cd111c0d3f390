// ParamSpec box arithmetic (nn/param_spec.h): for dim-0, dim-1 (and dim-2)
// splits and stride-3 fused splits of 2-d and 3-d shapes over 1, 2 and 4
// shards, the ranks' boxes cover the logical tensor exactly once, the local
// shape holds the boxes' elements, and the order invariant holds (each
// rank's local tensor, built by narrowing segments, lists its boxes' union in
// row-major order); local_range_boxes pieces; refused specs. Module specs,
// and init_normal(spec) shards that reassemble into the serial draw.
#include "nn/param_spec.h"

#include <gtest/gtest.h>

#include <cstring>

#include "nn/module.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/shards.h"

namespace keel::nn {
namespace {

using testing::expected_local;
using testing::split_spec;
using testing::union_order;

struct Layout {
  Shape logical;
  int64_t dim, stride;
};

std::vector<Layout> layouts() {
  return {{{12, 8}, 0, 1},    {{8, 12}, 1, 1},    {{24, 8}, 0, 3},    {{8, 24}, 1, 3},
          {{12, 4, 6}, 0, 1}, {{3, 12, 5}, 1, 1}, {{2, 3, 24}, 2, 3}, {{12, 4, 2}, 0, 3},
          {{2, 24, 3}, 1, 3}, {{5, 7}, -1, 1}};
}

TEST(ParamSpec, ShardsCoverTheLogicalTensorOnceInRowMajorOrder) {
  for (const Layout& l : layouts())
    for (int count : {1, 2, 4}) {
      const int64_t n = shape_numel(l.logical);
      Tensor serial = arange(0, double(n), 1, DType::I64).view(l.logical);  // the logical arange
      std::vector<int> hits(size_t(n), 0);
      Tensor scattered = full(l.logical, -1, DType::I64);
      int64_t* out = scattered.data<int64_t>();
      const int ranks = l.dim < 0 ? 1 : count;
      for (int r = 0; r < ranks; ++r) {
        ParamSpec s = split_spec(l.logical, l.dim, l.stride, r, l.dim < 0 ? 1 : count);
        const std::string what = describe(s);
        std::vector<Box> boxes = shard_boxes(s);
        EXPECT_EQ(boxes.size(), size_t(l.dim < 0 ? 1 : l.stride)) << what;
        EXPECT_EQ(boxes_numel(boxes), shape_numel(local_shape(s))) << what;
        // Scatter the local tensor into the logical one, in the boxes' union order.
        auto local = expected_local(serial, s).to_vector<int64_t>();
        auto order = union_order(l.logical, boxes);
        ASSERT_EQ(order.size(), local.size()) << what;
        for (size_t k = 0; k < order.size(); ++k) {
          out[order[k]] = local[k];
          ++hits[size_t(order[k])];
        }
      }
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(hits[size_t(i)], 1)
            << shape_str(l.logical) << " dim " << l.dim << " element " << i;
      EXPECT_EQ(testing::to_doubles(scattered), testing::to_doubles(serial))
          << shape_str(l.logical) << " dim " << l.dim << " stride " << l.stride << " / " << count;
    }
}

TEST(ParamSpec, StridedQkvExample) {
  // logical (3C, C) with C = 4, two shards: rank 1 holds rows 2..3 of each segment.
  ParamSpec s = split_spec({12, 4}, 0, 3, 1, 2);
  EXPECT_EQ(local_shape(s), (Shape{6, 4}));
  auto boxes = shard_boxes(s);
  ASSERT_EQ(boxes.size(), 3u);
  EXPECT_EQ(box_str(boxes[0]), "[2:4, 0:4]");
  EXPECT_EQ(box_str(boxes[1]), "[6:8, 0:4]");
  EXPECT_EQ(box_str(boxes[2]), "[10:12, 0:4]");
  EXPECT_EQ(describe(s), "logical (12, 4) split on dim 0 over tp (stride 3, shard 1 of 2)");
}

TEST(ParamSpec, LocalRangesArePiecesOfTheShardInOrder) {
  for (const Layout& l : layouts())
    for (int count : {1, 2, 4}) {
      const int ranks = l.dim < 0 ? 1 : count;
      for (int r = 0; r < ranks; ++r) {
        ParamSpec s = split_spec(l.logical, l.dim, l.stride, r, l.dim < 0 ? 1 : count);
        auto whole = union_order(l.logical, shard_boxes(s));
        const int64_t n = int64_t(whole.size());
        // Uneven ZeRO-style pieces: starting and ending mid-row.
        for (int64_t begin : {int64_t(0), n / 7, n / 3 + 1})
          for (int64_t end : {begin, begin + 1, n / 2 + 3, n}) {
            if (end > n || end < begin) continue;
            auto piece = union_order(l.logical, local_range_boxes(s, begin, end));
            std::vector<int64_t> want(whole.begin() + begin, whole.begin() + end);
            EXPECT_EQ(piece, want) << describe(s) << " [" << begin << ", " << end << ")";
          }
        // Pieces of an even split over 3 replicas tile the shard.
        std::vector<int64_t> tiled;
        for (int k = 0; k < 3; ++k) {
          auto p = union_order(l.logical, local_range_boxes(s, n * k / 3, n * (k + 1) / 3));
          tiled.insert(tiled.end(), p.begin(), p.end());
        }
        EXPECT_EQ(tiled, whole) << describe(s);
      }
    }
  EXPECT_KEEL_ERROR(local_range_boxes(split_spec({8, 4}, 0, 1, 0, 2), 0, 17), "local element range",
                    "[0, 16)");
}

TEST(ParamSpec, BadSpecsAreRefused) {
  EXPECT_KEEL_ERROR(local_shape(split_spec({6, 4}, 0, 1, 0, 4)), "dim 0", "(6, 4)",
                    "does not divide by tp shard_count 4");
  EXPECT_KEEL_ERROR(shard_boxes(split_spec({6, 4}, 2, 1, 0, 2)), "shard_dim 2 is out of range",
                    "(6, 4)");
  EXPECT_KEEL_ERROR(local_shape(split_spec({6, 4}, -2, 1, 0, 1)), "shard_dim -2");
  EXPECT_KEEL_ERROR(local_shape(split_spec({10, 4}, 0, 3, 0, 1)), "size 10",
                    "does not split into stride 3 equal segments");
  EXPECT_KEEL_ERROR(local_shape(split_spec({12, 4}, 0, 3, 0, 8)), "segments of 4",
                    "does not divide by tp shard_count 8");
  EXPECT_KEEL_ERROR(local_shape(split_spec({8, 4}, 0, 1, 2, 2)), "shard_rank 2 is not in [0, 2)");
  EXPECT_KEEL_ERROR(local_shape(split_spec({8, 4}, 0, 0, 0, 2)), "stride must be >= 1");
  EXPECT_KEEL_ERROR(local_shape(split_spec({8, 4}, 0, 1, 0, 0)), "shard_count must be >= 1");
  ParamSpec ep = split_spec({4, 6}, 0, 1, 0, 3);
  ep.axis = parallel::Axis::EP;
  EXPECT_KEEL_ERROR(local_shape(ep), "ep shard_count 3");
}

class Sharded : public Module {
 public:
  explicit Sharded(int tp_rank, bool wrong_shape = false) {
    register_parameter("norm", ones({4}));
    register_parameter("proj", zeros({4, 4}), true);
    ParamSpec col = split_spec({8, 4}, 0, 1, tp_rank, 2);
    col.decay = true;
    register_parameter("col", zeros(wrong_shape ? Shape{8, 4} : Shape{4, 4}), col);
    ParamSpec experts = split_spec({4, 2, 3}, 0, 1, tp_rank, 2);
    experts.axis = parallel::Axis::EP;
    experts.grad_group = GradGroup::ExpertDataParallel;
    register_parameter("experts", zeros({2, 2, 3}), experts);
  }
};

class Outer : public Module {
 public:
  Outer() { inner_ = register_module("inner", std::make_shared<Sharded>(1)); }
  std::shared_ptr<Sharded> inner_;
};

TEST(ParamSpec, ModuleListsSpecsInParameterOrder) {
  Outer m;
  auto params = m.named_parameters();
  auto specs = m.named_parameter_specs();
  ASSERT_EQ(specs.size(), params.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(specs[i].first, params[i].first);
    EXPECT_EQ(params[i].second.sizes(), local_shape(specs[i].second)) << specs[i].first;
  }
  EXPECT_EQ(specs[0].first, "inner.norm");
  EXPECT_EQ(specs[0].second.logical, (Shape{4}));  // filled in for replicated params
  EXPECT_FALSE(specs[0].second.sharded());
  EXPECT_EQ(specs[2].first, "inner.col");
  EXPECT_EQ(specs[2].second.logical, (Shape{8, 4}));
  EXPECT_EQ(specs[2].second.shard_rank, 1);
  EXPECT_EQ(specs[3].second.axis, parallel::Axis::EP);
  EXPECT_EQ(specs[3].second.grad_group, GradGroup::ExpertDataParallel);
  EXPECT_EQ(m.decayed_parameter_names(), (std::vector<std::string>{"inner.proj", "inner.col"}));
  EXPECT_KEEL_ERROR(Sharded(0, true), "parameter 'col'", "(8, 4)", "local shape (4, 4)");
}

class BadSpec : public Module {
 public:
  explicit BadSpec(int which) {
    if (which == 0) register_parameter("w", zeros({3, 4}), split_spec({6, 4}, 0, 1, 0, 4));
    if (which == 1) register_parameter("w", zeros({3, 4}), split_spec({}, 0, 1, 0, 2));
  }
};

TEST(ParamSpec, ModuleRefusesBadSpecsByName) {
  EXPECT_KEEL_ERROR(BadSpec(0), "parameter 'w'", "does not divide");
  EXPECT_KEEL_ERROR(BadSpec(1), "parameter 'w'", "no logical shape");
}

TEST(ParamSpec, InitShardsReassembleIntoTheSerialDraw) {
  const double std = 0.02;
  for (const Layout& l : layouts())
    for (int count : {1, 2, 4}) {
      const int ranks = l.dim < 0 ? 1 : count;
      Generator serial_gen(1234);
      serial_gen.set_state(1234, 5);
      Tensor serial = init_normal(l.logical, std, serial_gen);
      auto want = serial.to_vector<float>();
      std::vector<float> got(want.size(), 0.0f);
      for (int r = 0; r < ranks; ++r) {
        ParamSpec s = split_spec(l.logical, l.dim, l.stride, r, ranks);
        Generator gen(1234);
        gen.set_state(1234, 5);
        Tensor shard = init_normal(s, std, gen);
        EXPECT_EQ(gen.offset(), serial_gen.offset()) << "consumed like the full draw";
        EXPECT_EQ(shard.sizes(), local_shape(s));
        // The layout's own local tensor of the serial weights, bit for bit.
        EXPECT_EQ(std::memcmp(shard.contiguous().raw_data(), expected_local(serial, s).raw_data(),
                              size_t(shard.numel()) * 4),
                  0)
            << describe(s);
        auto local = shard.to_vector<float>();
        auto order = union_order(l.logical, shard_boxes(s));
        ASSERT_EQ(order.size(), local.size());
        for (size_t k = 0; k < order.size(); ++k) got[size_t(order[k])] = local[k];
      }
      // Bit-identical: the shards are the serial weights.
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << shape_str(l.logical) << " dim " << l.dim << " stride " << l.stride << " / " << count;
    }
  Generator gen(1);
  EXPECT_KEEL_ERROR(init_normal(ParamSpec{}, 0.02, gen), "init_normal", "no logical shape");
}

}  // namespace
}  // namespace keel::nn
