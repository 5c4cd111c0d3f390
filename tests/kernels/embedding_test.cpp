// embedding: forward against a float64 lookup, the weight gradient against
// float64 finite differences (repeated ids must sum), i32/i64 ids of any
// shape, strided weights, bf16, the deterministic scatter-add at sizes that
// run in parallel, and bad ids.
#include "kernels/embedding.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;
using testing::uniform;

// out[p, c] = w[ids[p], c]
Doubles embedding_ref(const Doubles& w, const std::vector<int64_t>& ids, int64_t c) {
  Doubles out;
  for (int64_t id : ids)
    for (int64_t j = 0; j < c; ++j) out.push_back(w[size_t(id * c + j)]);
  return out;
}

// Checks forward and the weight gradient of embedding(weight, ids).
void check_embedding(const Tensor& weight, const Tensor& ids) {
  std::vector<int64_t> id_values = ids.to_vector<int64_t>();
  const int64_t c = weight.size(1);
  Tensor y = check_op(
      [&](const std::vector<Tensor>& in) { return embedding(in[0], ids); },
      [&](const std::vector<Doubles>& in) { return embedding_ref(in[0], id_values, c); }, {weight});
  Shape want = ids.sizes();
  want.push_back(c);
  EXPECT_EQ(y.sizes(), want);
}

TEST(Embedding, RepeatedIdsSumTheirGradients) {
  Tensor w = leaf({6, 3}, 1);
  Tensor ids = from_vector<int64_t>({1, 3, 1, 5, 0, 1, 3, 3}, {2, 4});
  check_embedding(w, ids);
  // Row 1 appears three times, row 2 never: its gradient is exactly zero.
  Tensor g = w.grad();
  Doubles gd = testing::to_doubles(g);
  for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(gd[size_t(2 * 3 + j)], 0.0);
}

TEST(Embedding, I32IdsOfAnyShape) {
  Tensor w = leaf({5, 4}, 2);
  check_embedding(w, from_vector<int32_t>({4, 0, 0, 2, 4, 1, 3, 3, 0, 2, 1, 4}, {2, 3, 2}));
  check_embedding(w, from_vector<int32_t>({3}, {1}));
  check_embedding(w, from_vector<int64_t>({2}, {}));  // 0-d ids -> (C)
}

TEST(Embedding, StridedWeightAndIds) {
  // weight (V, C) viewed from a (C, V) tensor: rows have stride 1, columns V.
  Tensor w = uniform({3, 7}, 3).transpose(0, 1);
  w.set_requires_grad(true);
  Tensor ids = from_vector<int64_t>({6, 0, 1, 6, 2, 5, 6, 3}, {4, 2}).transpose(0, 1);
  check_embedding(w, ids);
}

TEST(Embedding, HalfPrecisionLookupIsExactAndBackwardRoundsOnce) {
  Tensor w = uniform({8, 5}, 4).to(DType::BF16).set_requires_grad(true);
  Tensor ids = from_vector<int64_t>({7, 2, 7, 7}, {4});
  Tensor y = embedding(w, ids);
  EXPECT_EQ(y.dtype(), DType::BF16);
  Doubles wd = testing::to_doubles(w), yd = testing::to_doubles(y);
  EXPECT_EQ(yd, embedding_ref(wd, {7, 2, 7, 7}, 5));  // a copy: bit-exact
  Tensor g = uniform({4, 5}, 5).to(DType::BF16);
  y.backward(g);
  Doubles gd = testing::to_doubles(g), dw = testing::to_doubles(w.grad());
  for (int64_t j = 0; j < 5; ++j) {
    double sum = gd[size_t(0 * 5 + j)] + gd[size_t(2 * 5 + j)] + gd[size_t(3 * 5 + j)];
    double rounded = double(bf16_to_float(float_to_bf16(float(sum))));
    EXPECT_EQ(dw[size_t(7 * 5 + j)], rounded);  // summed wide, rounded once to bf16
    EXPECT_EQ(dw[size_t(0 * 5 + j)], 0.0);
  }
}

// The f64 scatter-add reference: dw[ids[p]] += g[p].
Doubles scatter_ref(const Doubles& g, const std::vector<int64_t>& ids, int64_t v, int64_t c) {
  Doubles dw(size_t(v * c), 0.0);
  for (size_t p = 0; p < ids.size(); ++p)
    for (int64_t j = 0; j < c; ++j) dw[size_t(ids[p] * c + j)] += g[p * size_t(c) + size_t(j)];
  return dw;
}

TEST(Embedding, BackwardIsDeterministicAcrossThreadCounts) {
  // Enough rows to run in parallel; ids drawn from few values plus one very
  // frequent id (like padding), so many rows collide.
  for (int64_t v : {int64_t(50), int64_t(200000)}) {  // counting sort, then stable sort
    SCOPED_TRACE("V = " + std::to_string(v));
    const int64_t n = 4096, c = 64;
    std::vector<int64_t> ids(static_cast<size_t>(n));
    for (int64_t p = 0; p < n; ++p)
      ids[size_t(p)] = p % 3 == 0 ? 1 : (p * 7919) % std::min<int64_t>(v, 50);
    Tensor id_t = from_vector<int64_t>(ids, {n});
    Tensor g = uniform({n, c}, 6);
    auto run = [&] {
      Tensor dw = zeros({v, c});
      kernels::embedding_backward(g, id_t, dw);
      return dw.narrow(0, 0, 50).contiguous().to_vector<float>();
    };
    const int threads = omp_get_max_threads();
    std::vector<float> many = run();
    omp_set_num_threads(1);
    std::vector<float> one = run();
    omp_set_num_threads(threads);
    EXPECT_EQ(many, one);  // bit-identical whatever the thread count
    Doubles ref = scatter_ref(testing::to_doubles(g), ids, 50, c);
    Doubles got(many.begin(), many.end());
    // Sums of up to ~1400 terms formed in f64, rounded once to f32.
    EXPECT_TRUE(testing::all_close(got, ref, 1e-6, 1e-6));
  }
}

TEST(Embedding, BackwardAccumulatesIntoDweight) {
  Tensor dw = full({3, 2}, 1.0);
  Tensor g = ones({2, 2});
  kernels::embedding_backward(g, from_vector<int32_t>({2, 2}, {2}), dw);
  EXPECT_EQ(testing::to_doubles(dw), (Doubles{1, 1, 1, 1, 3, 3}));
}

TEST(Embedding, BadInputsNameIdPositionAndV) {
  Tensor w = zeros({6, 3});
  EXPECT_KEEL_ERROR(embedding(w, from_vector<int64_t>({1, 2, 3, 0, 1, 7}, {2, 3})), "embedding",
                    "id 7", "position (1, 2)", "V = 6");
  EXPECT_KEEL_ERROR(embedding(w, from_vector<int32_t>({-1}, {1})), "id -1", "position (0,)",
                    "V = 6");
  EXPECT_KEEL_ERROR(embedding(w, zeros({2})), "embedding", "i32 or i64", "f32");
  EXPECT_KEEL_ERROR(embedding(zeros({6}), from_vector<int64_t>({0}, {1})), "embedding", "(V, C)",
                    "(6,)");
  Tensor dw = zeros({6, 3});
  EXPECT_KEEL_ERROR(
      kernels::embedding_backward(zeros({2, 4}), from_vector<int64_t>({0, 1}, {2}), dw),
      "embedding_backward", "(2, 4)", "(2, 3)");
}

}  // namespace
}  // namespace keel
