// Boxes (core/box.h): flat ranges as boxes for every range of small shapes,
// runs and overlap detection against brute force over the elements, the
// problems boxes_problem names, and randn_boxes drawing exactly the serial
// randn's values at a box set's elements.
#include "core/box.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "tests/testing/gradcheck.h"
#include "tests/testing/shards.h"

namespace keel {
namespace {

using testing::multiplicity;

TEST(Box, FlatRangesBecomeBoxesInFlatOrder) {
  for (const Shape& shape : {Shape{7}, Shape{3, 5}, Shape{2, 3, 4}, Shape{2, 1, 3, 2}}) {
    const int64_t n = shape_numel(shape);
    for (int64_t begin = 0; begin <= n; ++begin)
      for (int64_t end = begin; end <= n; ++end) {
        auto boxes = flat_range_boxes(shape, begin, end);
        EXPECT_LE(boxes.size(), 2 * shape.size() - 1) << shape_str(shape);
        EXPECT_EQ(boxes_numel(boxes), end - begin);
        // Box k's elements all come before box k+1's, and together they are [begin, end).
        int64_t next = begin;
        for (const Box& b : boxes) {
          ASSERT_TRUE(box_in_bounds(b, shape)) << box_str(b);
          auto runs = box_runs(shape, {b});
          for (const FlatRun& r : runs) {
            EXPECT_EQ(r.begin, next) << shape_str(shape) << " [" << begin << ", " << end << ")";
            next = r.end;
          }
        }
        EXPECT_EQ(next, end);
      }
  }
  // A scalar's one element is one box with no dimensions.
  auto scalar = flat_range_boxes({}, 0, 1);
  ASSERT_EQ(scalar.size(), 1u);
  EXPECT_TRUE(scalar[0].offset.empty());
  EXPECT_EQ(scalar[0].numel(), 1);
  EXPECT_TRUE(flat_range_boxes({}, 0, 0).empty());
  EXPECT_TRUE(flat_range_boxes({2, 0, 3}, 0, 0).empty());
  EXPECT_KEEL_ERROR(flat_range_boxes({4, 4}, 12, 17), "element range [12, 17)", "(4, 4)");
  EXPECT_KEEL_ERROR(flat_range_boxes({4, 4}, 3, 2), "element range [3, 2)");
}

TEST(Box, RunsAndOverlapsMatchBruteForce) {
  const Shape shape{4, 5, 3};
  // Whole trailing dimensions make one run: rows 1..2 of every column block.
  auto runs = box_runs(shape, {Box{{1, 0, 0}, {2, 5, 3}}});
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].begin, 15);
  EXPECT_EQ(runs[0].end, 45);
  EXPECT_EQ(box_runs(shape, {Box{{0, 1, 1}, {2, 2, 1}}}).size(), 4u);
  EXPECT_EQ(flat_index(shape, {2, 3, 1}), 2 * 15 + 3 * 3 + 1);

  // Random box pairs: find_overlap agrees with counting elements.
  Generator gen(5);
  Tensor u = rand_uniform({400, 6}, 0, 1, gen);  // (pairs, lo/len per dim)
  auto vals = u.to_vector<float>();
  for (int t = 0; t < 200; ++t) {
    std::vector<Box> boxes(2);
    for (int k = 0; k < 2; ++k)
      for (size_t d = 0; d < 3; ++d) {
        const int64_t lo = int64_t(vals[size_t(t * 12 + k * 6 + d * 2) % vals.size()] * shape[d]);
        const int64_t len =
            int64_t(vals[size_t(t * 12 + k * 6 + d * 2 + 1) % vals.size()] * (shape[d] - lo + 1));
        boxes[size_t(k)].offset.push_back(lo);
        boxes[size_t(k)].count.push_back(std::min(len, shape[d] - lo));
      }
    auto m = multiplicity(shape, boxes);
    const bool shared = std::any_of(m.begin(), m.end(), [](int c) { return c > 1; });
    EXPECT_EQ(find_overlap(shape, boxes).has_value(), shared)
        << box_str(boxes[0]) << " " << box_str(boxes[1]);
    EXPECT_EQ(boxes_overlap(boxes[0], boxes[1]), shared);
    EXPECT_EQ(boxes_problem(shape, boxes).empty(), !shared);
  }
}

TEST(Box, ProblemsNameTheBoxes) {
  const Shape shape{4, 6};
  EXPECT_EQ(boxes_problem(shape, {Box{{0, 0}, {2, 6}}, Box{{2, 0}, {2, 6}}}), "");
  EXPECT_EQ(boxes_problem(shape, {Box{{0, 4}, {1, 3}}}),
            "box [0:1, 4:7] does not lie in shape (4, 6)");
  EXPECT_NE(boxes_problem(shape, {Box{{0}, {1}}}).find("does not match the 2 dimensions"),
            std::string::npos);
  EXPECT_EQ(boxes_problem(shape, {Box{{0, 0}, {2, 3}}, Box{{1, 2}, {1, 2}}}),
            "boxes [0:2, 0:3] and [1:2, 2:4] overlap");
  EXPECT_EQ(boxes_problem(shape, {Box{{1, 0}, {-1, 2}}}),
            "box [1:0, 0:2] does not lie in shape (4, 6)");
}

// The values of randn(shape, gen) at the boxes' union, in row-major order,
// gathered by brute force over the serial draw.
std::vector<float> serial_at(const Shape& shape, const std::vector<Box>& boxes, uint64_t seed,
                             uint64_t offset) {
  Generator gen(seed);
  gen.set_state(seed, offset);
  auto all = randn(shape, gen).to_vector<float>();
  auto m = multiplicity(shape, boxes);
  std::vector<float> out;
  for (size_t i = 0; i < all.size(); ++i)
    if (m[i] > 0) out.push_back(all[i]);
  return out;
}

TEST(Box, RandnBoxesAreTheSerialDrawsElements) {
  const Shape shape{6, 8, 5};
  const std::vector<std::vector<Box>> sets = {
      flat_range_boxes(shape, 0, 240),
      flat_range_boxes(shape, 7, 163),                         // mid-row at both ends
      {Box{{0, 2, 0}, {6, 3, 5}}},                             // a dim-1 slab
      {Box{{4, 0, 1}, {2, 8, 2}}, Box{{0, 0, 0}, {2, 8, 5}}},  // out of order, disjoint
      {Box{{0, 0, 0}, {1, 2, 5}}, Box{{2, 0, 0}, {1, 2, 5}}, Box{{4, 0, 0}, {1, 2, 5}}},
      {},
  };
  for (const auto& boxes : sets) {
    Generator gen(99);
    gen.set_state(99, 3);
    Tensor got = randn_boxes(shape, boxes, gen);  // (n)
    EXPECT_EQ(gen.offset(), 4u) << "one offset per draw, as randn";
    EXPECT_EQ(got.sizes(), (Shape{boxes_numel(boxes)}));
    // Bit-exact: the same Philox draw of the same element.
    auto want = serial_at(shape, boxes, 99, 3);
    auto have = got.to_vector<float>();
    ASSERT_EQ(have.size(), want.size());
    EXPECT_EQ(std::memcmp(have.data(), want.data(), have.size() * sizeof(float)), 0);
  }
  // Large enough for the threaded path: a dim-1 split of a (300, 256) tensor.
  const Shape big{300, 256};
  std::vector<Box> half = {Box{{0, 128}, {300, 128}}};
  Generator gen(7);
  auto have = randn_boxes(big, half, gen).to_vector<float>();
  Generator serial(7);
  Tensor full_draw = randn(big, serial);  // (300, 256)
  auto want = full_draw.narrow(1, 128, 128).contiguous().to_vector<float>();
  EXPECT_EQ(std::memcmp(have.data(), want.data(), have.size() * sizeof(float)), 0);
  // bf16 is the f32 draw rounded, as randn's.
  Generator g1(3), g2(3);
  EXPECT_EQ(testing::to_doubles(randn_boxes(big, half, g1, DType::BF16)),
            testing::to_doubles(randn(big, g2, DType::BF16).narrow(1, 128, 128)));

  Generator bad(1);
  EXPECT_KEEL_ERROR(randn_boxes({4, 4}, {Box{{0, 0}, {2, 4}}, Box{{1, 0}, {2, 4}}}, bad),
                    "randn_boxes", "overlap");
  EXPECT_KEEL_ERROR(randn_boxes({4, 4}, {Box{{3, 0}, {2, 4}}}, bad), "does not lie in");
}

}  // namespace
}  // namespace keel
