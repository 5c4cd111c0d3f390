// Reductions over any dims: sum, mean, var, max (with indices).
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/reduce.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;

// Reference reduction of a (2, 3, 4) tensor over a dim mask; `kind` 0 sum, 1 mean, 2 var(1).
Doubles reduce_ref(const Doubles& x, const std::vector<int64_t>& dims, int kind) {
  const int64_t S[3] = {2, 3, 4};
  bool red[3] = {false, false, false};
  if (dims.empty()) red[0] = red[1] = red[2] = true;
  for (int64_t d : dims) red[(d + 3) % 3] = true;
  int64_t ko[3];
  int64_t kept = 1;
  for (int d = 2; d >= 0; --d) {
    ko[d] = red[d] ? 0 : kept;
    kept *= red[d] ? 1 : S[d];
  }
  std::vector<std::vector<double>> groups{size_t(kept)};
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 4; ++k)
        groups[size_t(i * ko[0] + j * ko[1] + k * ko[2])].push_back(x[size_t((i * 3 + j) * 4 + k)]);
  Doubles out;
  for (auto& g : groups) {
    double s = 0;
    for (double v : g) s += v;
    double m = s / double(g.size());
    double v2 = 0;
    for (double v : g) v2 += (v - m) * (v - m);
    out.push_back(kind == 0 ? s : kind == 1 ? m : v2 / double(g.size() - 1));
  }
  return out;
}

TEST(Reduce, SumMeanVarOverAnyDims) {
  const std::vector<std::vector<int64_t>> dim_sets = {{}, {0}, {1}, {2}, {-1}, {0, 2}, {0, 1}, {1, 2}};
  for (const auto& dims : dim_sets) {
    for (int kind = 0; kind < 3; ++kind) {
      SCOPED_TRACE("kind " + std::to_string(kind) + " dims " + shape_str(dims));
      Tensor x = leaf({2, 3, 4}, 21);
      auto ref = [&](const std::vector<Doubles>& in) { return reduce_ref(in[0], dims, kind); };
      for (bool keep : {false, true}) {
        Tensor out = check_op(
            [&](const std::vector<Tensor>& in) {
              return kind == 0 ? sum(in[0], dims, keep)
                               : kind == 1 ? mean(in[0], dims, keep) : var(in[0], dims, 1, keep);
            },
            ref, {x});
        EXPECT_EQ(out.dim(), keep ? 3 : (dims.empty() ? 0 : 3 - int64_t(dims.size())));
      }
    }
  }
}

TEST(Reduce, StridedInputAndOuterReductionPath) {
  // (R, K) with K contiguous takes the row-accumulation path; its transpose the generic one.
  Tensor x = testing::uniform({300, 40}, 5);
  Doubles xd = testing::to_doubles(x);
  Doubles s0 = testing::to_doubles(kernels::sum(x, {0}, false));
  Doubles s1 = testing::to_doubles(kernels::sum(x.transpose(0, 1), {1}, false));
  for (int64_t k = 0; k < 40; ++k) {
    double e = 0;
    for (int64_t r = 0; r < 300; ++r) e += xd[size_t(r * 40 + k)];
    EXPECT_NEAR(s0[size_t(k)], e, 1e-5);
    EXPECT_NEAR(s1[size_t(k)], e, 1e-5);
  }
}

TEST(Reduce, MaxWithIndicesAndGradient) {
  Tensor x = leaf({3, 5}, 13);
  for (int64_t dim : {0, 1}) {
    auto ref = [&](const std::vector<Doubles>& in) {
      Doubles out;
      int64_t outer = dim == 0 ? 5 : 3, n = dim == 0 ? 3 : 5;
      for (int64_t o = 0; o < outer; ++o) {
        double best = -INFINITY;
        for (int64_t r = 0; r < n; ++r) {
          double v = in[0][size_t(dim == 0 ? r * 5 + o : o * 5 + r)];
          best = std::max(best, v);
        }
        out.push_back(best);
      }
      return out;
    };
    check_op([&](const std::vector<Tensor>& in) { return max(in[0], dim).first; }, ref, {x});
    auto [v, idx] = max(x, dim, true);
    Doubles xd = testing::to_doubles(x), id = testing::to_doubles(idx), vd = testing::to_doubles(v);
    for (size_t o = 0; o < id.size(); ++o) {
      size_t pos = dim == 0 ? size_t(id[o]) * 5 + o : o * 5 + size_t(id[o]);
      EXPECT_EQ(xd[pos], vd[o]);
    }
  }
  // Ties pick the first index; NaN propagates.
  auto [tv, ti] = kernels::max(from_vector<float>({1, 3, 3, 2}, {4}), 0, false);
  EXPECT_EQ(ti.item(), 1.0);
  auto [nv, ni] = kernels::max(from_vector<float>({1, NAN, 3}, {3}), 0, false);
  EXPECT_TRUE(std::isnan(nv.item()));
}

TEST(Reduce, SumToInvertsBroadcast) {
  Tensor g = testing::uniform({2, 3, 4}, 1);
  Tensor s = kernels::sum_to(g, {3, 1});
  EXPECT_EQ(s.sizes(), (Shape{3, 1}));
  Doubles gd = testing::to_doubles(g), sd = testing::to_doubles(s);
  for (int j = 0; j < 3; ++j) {
    double e = 0;
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 4; ++k) e += gd[size_t((i * 3 + j) * 4 + k)];
    EXPECT_NEAR(sd[size_t(j)], e, 1e-5);
  }
}

TEST(Reduce, BadDims) {
  EXPECT_KEEL_ERROR(kernels::sum(zeros({2, 3}), {2}, false), "sum", "2");
  EXPECT_KEEL_ERROR(kernels::sum(zeros({2, 3}), {1, -1}, false), "twice", "(2, 3)");
  EXPECT_KEEL_ERROR(kernels::max(zeros({2, 0}), 1, false), "empty");
}

}  // namespace
}  // namespace keel
