// Activation recomputation gives the same gradients as the plain graph,
// keeps no intermediates, and replays random draws identically.
#include <gtest/gtest.h>

#include "autograd/ops.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::Doubles;
using testing::to_doubles;

// A small block with a parameter used inside: y = tanh(x * w) * x + w.
std::vector<Tensor> block(const std::vector<Tensor>& in, const Tensor& w) {
  Tensor h = tanh(mul(in[0], w));
  return {add(mul(h, in[0]), w), exp(in[0])};
}

TEST(Checkpoint, SameGradientsAsThePlainGraph) {
  Tensor w1 = testing::leaf({5}, 1), w2 = testing::leaf({5}, 1);
  Tensor x1 = testing::leaf({3, 5}, 2), x2 = testing::leaf({3, 5}, 2);
  auto plain = block({x1}, w1);
  sum(mul(plain[0], plain[1])).backward();
  auto ck = checkpoint([&](const std::vector<Tensor>& in) { return block(in, w2); }, {x2});
  EXPECT_EQ(to_doubles(ck[0]), to_doubles(plain[0]));
  sum(mul(ck[0], ck[1])).backward();
  EXPECT_EQ(to_doubles(x2.grad()), to_doubles(x1.grad()));
  EXPECT_EQ(to_doubles(w2.grad()), to_doubles(w1.grad()));
}

TEST(Checkpoint, KeepsNoIntermediates) {
  Tensor x = testing::leaf({1000}, 3);
  std::weak_ptr<Storage> inner;
  auto out = checkpoint(
      [&](const std::vector<Tensor>& in) {
        Tensor h = exp(in[0]);
        inner = h.storage();
        return std::vector<Tensor>{mul_scalar(h, 2.0)};
      },
      {x});
  EXPECT_TRUE(inner.expired());  // nothing holds exp(x) between forward and backward
  sum(out[0]).backward();
  Doubles xd = to_doubles(x), g = to_doubles(x.grad());
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], 2 * std::exp(xd[i]), 1e-5 * g[i]);
}

TEST(Checkpoint, ParametersOnlyInsideStillGetGradients) {
  Tensor w = testing::leaf({4}, 4);
  Tensor x = testing::uniform({4}, 5);  // needs no gradient
  auto out = checkpoint([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{mul(in[0], w)}; }, {x});
  sum(out[0]).backward();
  EXPECT_EQ(to_doubles(w.grad()), to_doubles(x));
}

TEST(Checkpoint, ReplaysTheRandomStream) {
  // fn draws random numbers: the recomputation must see the same draws.
  manual_seed(77);
  Tensor x = testing::leaf({64}, 6);
  auto fn = [](const std::vector<Tensor>& in) {
    Tensor noise = randn({64});
    return std::vector<Tensor>{mul(in[0], noise)};
  };
  auto out = checkpoint(fn, {x});
  uint64_t after = default_generator().offset();
  sum(out[0]).backward();
  EXPECT_EQ(default_generator().offset(), after);  // the replay does not advance the stream
  manual_seed(77);
  Doubles noise = to_doubles(randn({64}));
  EXPECT_EQ(to_doubles(x.grad()), noise);
}

}  // namespace
}  // namespace keel
