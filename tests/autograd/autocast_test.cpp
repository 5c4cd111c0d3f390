// Autocast: layers compute in bf16/f16 under an AutocastGuard while the f32
// parameters receive f32 gradients; outside a guard nothing changes, and
// activation recomputation replays the precision of the forward.
#include <gtest/gtest.h>

#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::Doubles;
using testing::to_doubles;

TEST(Autocast, OffOutsideAGuardAndRestoredAfterIt) {
  EXPECT_EQ(autocast_dtype(), DType::F32);
  Tensor w = testing::leaf({3, 4}, 1);
  EXPECT_TRUE(autocast(w).same(w));
  {
    AutocastGuard bf16(DType::BF16);
    EXPECT_EQ(autocast_dtype(), DType::BF16);
    {
      AutocastGuard off(DType::F32);
      EXPECT_TRUE(autocast(w).same(w));
    }
    EXPECT_EQ(autocast_dtype(), DType::BF16);
    EXPECT_EQ(autocast(w).dtype(), DType::BF16);
    Tensor ids = arange(0, 3, 1, DType::I64);
    EXPECT_TRUE(autocast(ids).same(ids));  // integer tensors are left alone
    EXPECT_FALSE(autocast(Tensor()).defined());
  }
  EXPECT_EQ(autocast_dtype(), DType::F32);
  EXPECT_KEEL_ERROR(AutocastGuard(DType::I32), "AutocastGuard", "i32");
}

// y = x W^T in the compute dtype; W's gradient is f32 and equals the f32
// gradient up to the compute dtype's rounding of the operands and result.
void check_linear_gradients(DType compute, double rtol) {
  Tensor w = testing::leaf({8, 16}, 2), x = testing::leaf({5, 16}, 3);
  Tensor w32 = testing::leaf({8, 16}, 2), x32 = testing::leaf({5, 16}, 3);
  Tensor y;
  {
    AutocastGuard g(compute);
    y = linear(autocast(x), autocast(w), Tensor());
  }
  EXPECT_EQ(y.dtype(), compute);
  sum(square(to_dtype(y, DType::F32))).backward();
  Tensor y32 = linear(x32, w32, Tensor());
  sum(square(y32)).backward();
  ASSERT_EQ(w.grad().dtype(), DType::F32);
  ASSERT_EQ(x.grad().dtype(), DType::F32);
  // atol scaled to the gradients' size (sums of 5-16 products of O(1) terms).
  EXPECT_TRUE(testing::all_close(to_doubles(w.grad()), to_doubles(w32.grad()), rtol, 4 * rtol));
  EXPECT_TRUE(testing::all_close(to_doubles(x.grad()), to_doubles(x32.grad()), rtol, 4 * rtol));
}

// bf16 keeps 8 significant bits (2^-8 relative per rounding; a few roundings
// per value), f16 11.
TEST(Autocast, LinearInBf16GivesF32Gradients) { check_linear_gradients(DType::BF16, 4e-2); }
TEST(Autocast, LinearInF16GivesF32Gradients) { check_linear_gradients(DType::F16, 5e-3); }

TEST(Autocast, UsesOfOneParameterAccumulateInF32) {
  // A tied weight used twice: each use has its own cast, so the two
  // gradients meet in the f32 leaf, not in a bf16 sum.
  Tensor w = testing::leaf({4, 4}, 4);
  {
    AutocastGuard g(DType::BF16);
    Tensor a = autocast(w), b = autocast(w);
    sum(to_dtype(add(a, b), DType::F32)).backward();
  }
  EXPECT_EQ(w.grad().dtype(), DType::F32);
  for (double v : to_doubles(w.grad())) EXPECT_EQ(v, 2.0);
}

TEST(Autocast, CheckpointRecomputesAtTheForwardsPrecision) {
  Tensor w1 = testing::leaf({6, 6}, 5), w2 = testing::leaf({6, 6}, 5);
  Tensor x1 = testing::leaf({3, 6}, 6), x2 = testing::leaf({3, 6}, 6);
  auto block = [](const Tensor& x, const Tensor& w) {
    return tanh(linear(autocast(x), autocast(w), Tensor()));
  };
  Tensor plain, ck;
  {
    AutocastGuard g(DType::BF16);
    plain = block(x1, w1);
    ck = checkpoint([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{block(in[0], w2)}; },
                    {x2})[0];
  }
  ASSERT_EQ(ck.dtype(), DType::BF16);
  // Backward runs outside the guard; the replay must still be bf16 to give
  // the same gradients bit for bit.
  sum(to_dtype(plain, DType::F32)).backward();
  sum(to_dtype(ck, DType::F32)).backward();
  EXPECT_EQ(to_doubles(w2.grad()), to_doubles(w1.grad()));
  EXPECT_EQ(to_doubles(x2.grad()), to_doubles(x1.grad()));
}

}  // namespace
}  // namespace keel
