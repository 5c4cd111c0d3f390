// The tape: accumulation into leaves, reuse of a tensor, topological order,
// NoGradGuard, freed graphs, non-scalar roots, views.
#include <gtest/gtest.h>

#include "autograd/ops.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::Doubles;
using testing::to_doubles;

TEST(Engine, ChainRuleAndReuse) {
  Tensor x = from_vector<float>({1, 2, 3}, {3});
  x.set_requires_grad(true);
  // y = sum(x * x + 3 x): dy/dx = 2x + 3; x is used three times.
  Tensor y = sum(x * x + x * 3.0);
  EXPECT_FALSE(y.is_leaf());
  y.backward();
  EXPECT_EQ(to_doubles(x.grad()), (Doubles{5, 7, 9}));
  // A second graph accumulates into the same .grad.
  sum(x).backward();
  EXPECT_EQ(to_doubles(x.grad()), (Doubles{6, 8, 10}));
}

TEST(Engine, DiamondGraphRunsEachNodeOnce) {
  Tensor x = from_vector<float>({2}, {1});
  x.set_requires_grad(true);
  Tensor a = exp(x);
  Tensor b = a * a;  // both branches from a
  Tensor c = b + a;
  sum(c).backward();
  double e = std::exp(2.0);
  EXPECT_NEAR(x.grad().item(), 2 * e * e + e, 1e-3);
}

TEST(Engine, NoGradGuardRecordsNothing) {
  Tensor x = testing::leaf({4}, 1);
  Tensor y;
  {
    NoGradGuard guard;
    EXPECT_FALSE(grad_mode_enabled());
    y = exp(x);
  }
  EXPECT_TRUE(grad_mode_enabled());
  EXPECT_FALSE(y.requires_grad());
  EXPECT_KEEL_ERROR(sum(y).backward(), "does not require grad");
}

TEST(Engine, FreedGraphIsAClearError) {
  Tensor x = testing::leaf({3}, 2);
  Tensor loss = sum(exp(x));
  loss.backward();
  EXPECT_KEEL_ERROR(loss.backward(), "already freed", "retain_graph");
  Tensor loss2 = sum(exp(x));
  loss2.backward(Tensor(), /*retain_graph=*/true);
  Doubles once = to_doubles(x.grad());
  loss2.backward();
  Doubles twice = to_doubles(x.grad());
  Doubles xd = to_doubles(x);
  // first backward: exp(x); second and third: exp(x) each
  for (size_t i = 0; i < once.size(); ++i) EXPECT_NEAR(twice[i], 3 * std::exp(xd[i]), 1e-5 * twice[i]);
}

TEST(Engine, NonScalarNeedsExplicitGradient) {
  Tensor x = testing::leaf({2, 2}, 3);
  Tensor y = x * 2.0;
  EXPECT_KEEL_ERROR(y.backward(), "not a scalar", "(2, 2)");
  y.backward(ones({2, 2}));
  EXPECT_EQ(to_doubles(x.grad()), (Doubles{2, 2, 2, 2}));
  EXPECT_KEEL_ERROR(y.backward(ones({3})), "(3,)");
}

TEST(Engine, GraphIsFreedAfterBackward) {
  Tensor x = testing::leaf({1000}, 4);
  std::weak_ptr<Storage> saved;
  {
    Tensor h = exp(x);  // exp saves its output for backward
    saved = h.storage();
    Tensor loss = sum(h * 2.0);
    h = Tensor();
    EXPECT_FALSE(saved.expired());  // held by the tape
    loss.backward();
  }
  EXPECT_TRUE(saved.expired());
}

TEST(Engine, GradHookFiresOnceAfterTheLeafIsFinal) {
  Tensor x = testing::leaf({3}, 9);
  std::vector<Doubles> seen;
  register_grad_hook(x, [&](const Tensor& leaf) { seen.push_back(to_doubles(leaf.grad())); });
  // x feeds three nodes; the hook sees the summed gradient once.
  sum(x * 2.0 + x * 3.0 + x).backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], (Doubles{6, 6, 6}));
  sum(x).backward();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1], (Doubles{7, 7, 7}));
  EXPECT_KEEL_ERROR(register_grad_hook(x * 2.0, [](const Tensor&) {}), "not a leaf");
}

TEST(Views, GradientsFlowThroughViews) {
  Tensor x = testing::leaf({2, 3, 4}, 5);
  auto ref = [](const std::vector<Doubles>& in) {
    // permute(2,0,1) then narrow dim 0 to [1,3) then reshape to (2, 6) then * 1
    Doubles out;
    for (int k = 1; k < 3; ++k)
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j) out.push_back(in[0][size_t((i * 3 + j) * 4 + k)]);
    return out;
  };
  testing::check_op(
      [](const std::vector<Tensor>& in) {
        return reshape(narrow(permute(in[0], {2, 0, 1}), 0, 1, 2), {2, 6});
      },
      ref, {x});
  Tensor y = testing::leaf({3, 1}, 6);
  testing::check_op([](const std::vector<Tensor>& in) { return expand(in[0], {2, 3, 4}); },
                    [](const std::vector<Doubles>& in) {
                      Doubles out;
                      for (int i = 0; i < 2; ++i)
                        for (int j = 0; j < 3; ++j)
                          for (int k = 0; k < 4; ++k) out.push_back(in[0][size_t(j)]);
                      return out;
                    },
                    {y});
  Tensor z = testing::leaf({4, 2}, 7);
  testing::check_op(
      [](const std::vector<Tensor>& in) { return contiguous(transpose(unsqueeze(in[0], 0), 1, 2)); },
      [](const std::vector<Doubles>& in) {
        Doubles out;
        for (int j = 0; j < 2; ++j)
          for (int i = 0; i < 4; ++i) out.push_back(in[0][size_t(i * 2 + j)]);
        return out;
      },
      {z});
}

TEST(Views, DtypeConversionIsDifferentiable) {
  Tensor x = testing::leaf({8}, 8);
  Tensor y = sum(to_dtype(to_dtype(x, DType::BF16), DType::F32) * 3.0);
  y.backward();
  for (double g : to_doubles(x.grad())) EXPECT_EQ(g, 3.0);
}

}  // namespace
}  // namespace keel
