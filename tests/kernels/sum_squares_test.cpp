// Sum of squares over many tensors (the global gradient norm's square) on
// the CPU: equal to adding each tensor's sum in order; bad input refused.
#include <gtest/gtest.h>

#include "kernels/adamw.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

TEST(SumSquaresMulti, EqualsThePerTensorSumsInOrder) {
  std::vector<Tensor> xs = {testing::uniform({7, 5}, 1), testing::uniform({0}, 2),
                            testing::uniform({1000}, 3, -2.0, 2.0, DType::BF16),
                            testing::uniform({4, 9}, 4).transpose(0, 1)};
  double want = 0;
  for (const Tensor& x : xs) {
    double s = 0;
    for (double v : testing::to_doubles(x)) s += v * v;
    EXPECT_NEAR(kernels::sum_squares(x), s, 1e-12 * (1 + s));
    want += kernels::sum_squares(x);
  }
  EXPECT_EQ(kernels::sum_squares_multi(xs), want);
  EXPECT_EQ(kernels::sum_squares_multi({}), 0.0);
  EXPECT_KEEL_ERROR(kernels::sum_squares_multi({xs[0], Tensor()}), "sum_squares_multi",
                    "tensor 1", "undefined");
  EXPECT_KEEL_ERROR(kernels::sum_squares_multi({arange(0, 3, 1, DType::I64)}),
                    "sum_squares_multi", "i64");
}

}  // namespace
}  // namespace keel
