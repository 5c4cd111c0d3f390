// CUDA against CPU: embedding forward (dense and strided weights) and its
// sorted, segment-summed backward (heavily repeated ids, i32 and i64, a huge
// vocabulary), index_select / gather / scatter_add_ / index_add_ (strided
// and broadcast indices, every dim, bf16 accumulation), concat and stack,
// bad indices reported as keel::Error, and the autograd paths through them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/embedding.h"
#include "kernels/index.h"
#include "kernels/reduce.h"
#include "tests/cuda/parity.h"

namespace keel {
namespace {

using cuda_test::expect_close;
using cuda_test::expect_equal;
using cuda_test::poison_device_memory;
using cuda_test::to_gpu;
using cuda_test::Tol;
using cuda_test::tol_for;

// n ids in [0, v) with many repeats (and id 0, a "padding" id, very often).
Tensor repeated_ids(const Shape& shape, int64_t v, DType dt, uint64_t seed) {
  const int64_t n = shape_numel(shape);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    ids[size_t(i)] = i % 3 == 0 ? 0 : int64_t((uint64_t(i) * uint64_t(i) + seed) % uint64_t(v));
  return from_vector<int64_t>(ids, shape).to(dt);
}

TEST(CudaEmbedding, ForwardCopiesRowsExactly) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    for (DType it : {DType::I64, DType::I32}) {
      for (int64_t C : {64, 24, 7}) {  // 16-byte rows, rows not a whole number of packs
        Tensor w = testing::uniform({37, C}, 2000 + uint64_t(C), -1.0, 1.0, dt);
        Tensor ids = repeated_ids({5, 40}, 37, it, 2001);
        poison_device_memory();
        expect_equal(kernels::embedding(to_gpu(w), to_gpu(ids)), kernels::embedding(w, ids),
                     "embedding C = " + std::to_string(C));
      }
      // A strided weight (a transposed (C, V) table) and a strided ids view.
      Tensor wt = testing::uniform({24, 37}, 2002, -1.0, 1.0, dt);
      Tensor ids = repeated_ids({40, 5}, 37, it, 2003);
      expect_equal(kernels::embedding(to_gpu(wt).transpose(0, 1), to_gpu(ids).transpose(0, 1)),
                   kernels::embedding(wt.transpose(0, 1), ids.transpose(0, 1)),
                   "embedding of strided weight and ids");
    }
  }
}

TEST(CudaEmbedding, BackwardSumsRepeatedIdsLikeTheCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 2100;
  for (DType dt : {DType::F32, DType::BF16}) {
    for (DType it : {DType::I64, DType::I32}) {
      // (V, n): small vocabulary with heavy repeats; huge vocabulary, few ids.
      for (auto [V, n] : {std::pair<int64_t, int64_t>{37, 600}, {100000, 50}}) {
        const int64_t C = 24;
        Tensor ids = repeated_ids({n / 5, 5}, V, it, ++seed);
        Tensor dout = testing::uniform({n / 5, 5, C}, ++seed, -1.0, 1.0, dt);
        // dweight accumulates (+=): start both from the same values.
        Tensor dw = testing::uniform({V, C}, ++seed, -1.0, 1.0, dt);
        Tensor dw_g = to_gpu(dw);
        kernels::embedding_backward(dout, ids, dw);
        kernels::embedding_backward(to_gpu(dout), to_gpu(ids), dw_g);
        // Each row's sum is formed in f64 in position order on both sides.
        expect_close(dw_g, dw, tol_for(dt),
                     std::string("embedding_backward V = ") + std::to_string(V) + " " +
                         dtype_name(dt) + " ids " + dtype_name(it));
      }
    }
  }
  // A strided dweight (a transposed table): each row is still owned by one block.
  Tensor ids = repeated_ids({30}, 11, DType::I64, 2150);
  Tensor dout = testing::uniform({30, 9}, 2151);
  Tensor base = testing::uniform({9, 11}, 2152);
  Tensor base_g = to_gpu(base);
  Tensor dw = base.transpose(0, 1), dw_g = base_g.transpose(0, 1);  // (11, 9) views
  kernels::embedding_backward(dout, ids, dw);
  kernels::embedding_backward(to_gpu(dout), to_gpu(ids), dw_g);
  expect_close(base_g, base, tol_for(DType::F32), "embedding_backward into a strided dweight");
}

TEST(CudaEmbedding, BadIdIsAnErrorNamingIt) {
  KEEL_SKIP_WITHOUT_CUDA();
  Tensor w = to_gpu(testing::uniform({37, 8}, 2200));
  Tensor ids = to_gpu(from_vector<int64_t>({1, 2, 37, 5, 40, 0}, {2, 3}));
  EXPECT_KEEL_ERROR(kernels::embedding(w, ids), "id 37", "position (0, 2)", "V = 37");
  Tensor dw = to_gpu(zeros({37, 8}));
  Tensor dout = to_gpu(zeros({2, 3, 8}));
  Tensor neg = to_gpu(from_vector<int32_t>({1, 2, 3, 5, -4, 0}, {2, 3}));
  EXPECT_KEEL_ERROR(kernels::embedding_backward(dout, neg, dw), "id -4", "position (1, 1)");
}

TEST(CudaIndex, IndexSelectAndGatherMatchCpuExactly) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::I64, DType::U8}) {
    Tensor x32 = testing::uniform({5, 7, 3}, 2300, 0.0, 100.0);
    Tensor x = x32.to(dt), xg = to_gpu(x);
    for (int64_t dim : {0, 1, 2, -1}) {
      const int64_t size = x.size(dim);
      Tensor id = from_vector<int64_t>({size - 1, 0, 0, size / 2}, {4});
      for (DType it : {DType::I64, DType::I32}) {
        Tensor i = id.to(it);
        poison_device_memory();
        expect_equal(kernels::index_select(xg, dim, to_gpu(i)), kernels::index_select(x, dim, i),
                     std::string("index_select dim ") + std::to_string(dim) + " " + dtype_name(dt));
      }
    }
    // index_select of a transposed view, and a strided index.
    Tensor xt = x.transpose(0, 2), xgt = xg.transpose(0, 2);  // (3, 7, 5)
    Tensor sidx = from_vector<int64_t>({4, 9, 0, 9, 2, 9}, {6});
    Tensor every_other = sidx.as_strided({3}, {2}, 0);  // 4, 0, 2
    expect_equal(kernels::index_select(xgt, 2, to_gpu(sidx).as_strided({3}, {2}, 0)),
                 kernels::index_select(xt, 2, every_other), "index_select strided");

    // gather along each dim, with an index smaller than x off dim.
    for (int64_t dim : {0, 1, 2}) {
      Shape is = {4, 6, 2};
      std::vector<int64_t> v(static_cast<size_t>(shape_numel(is)));
      for (size_t k = 0; k < v.size(); ++k) v[k] = int64_t(k * 7 + 3) % x.size(dim);
      Tensor index = from_vector<int64_t>(v, is);
      poison_device_memory();
      expect_equal(kernels::gather(xg, dim, to_gpu(index)), kernels::gather(x, dim, index),
                   std::string("gather dim ") + std::to_string(dim) + " " + dtype_name(dt));
    }
  }
}

TEST(CudaIndex, ScatterAddAndIndexAddMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 2400;
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (int64_t dim : {0, 1}) {
      Tensor out = testing::uniform({4, 6}, ++seed, -1.0, 1.0, dt);
      Tensor src = testing::uniform({4, 6}, ++seed, -1.0, 1.0, dt);
      // Index (3, 5) with repeats: several src elements land on one out element.
      std::vector<int64_t> v(15);
      for (size_t k = 0; k < v.size(); ++k) v[k] = int64_t(k * k + 1) % out.size(dim);
      Tensor index = from_vector<int64_t>(v, {3, 5});
      Tensor out_g = to_gpu(out);
      kernels::scatter_add_(out, dim, index, src);
      kernels::scatter_add_(out_g, dim, to_gpu(index), to_gpu(src));
      expect_close(out_g, out, tol_for(dt),
                   std::string("scatter_add_ dim ") + std::to_string(dim) + " " + dtype_name(dt));
    }
    // index_add_: out (6, 4) += src (5, 4) at rows [1, 1, 5, 0, 1].
    Tensor out = testing::uniform({6, 4}, ++seed, -1.0, 1.0, dt);
    Tensor src = testing::uniform({5, 4}, ++seed, -1.0, 1.0, dt);
    Tensor index = from_vector<int32_t>({1, 1, 5, 0, 1}, {5});
    Tensor out_g = to_gpu(out);
    kernels::index_add_(out, 0, index, src);
    kernels::index_add_(out_g, 0, to_gpu(index), to_gpu(src));
    expect_close(out_g, out, tol_for(dt), std::string("index_add_ ") + dtype_name(dt));
    // Along the last dim of a strided out.
    Tensor base = testing::uniform({5, 6}, ++seed, -1.0, 1.0, dt);
    Tensor base_g = to_gpu(base);
    Tensor o = base.transpose(0, 1), o_g = base_g.transpose(0, 1);  // (6, 5) views
    Tensor s2 = testing::uniform({6, 3}, ++seed, -1.0, 1.0, dt);
    Tensor i2 = from_vector<int64_t>({4, 0, 4}, {3});
    kernels::index_add_(o, 1, i2, s2);
    kernels::index_add_(o_g, 1, to_gpu(i2), to_gpu(s2));
    expect_close(base_g, base, tol_for(dt), std::string("index_add_ strided ") + dtype_name(dt));
  }
}

TEST(CudaIndex, BadIndexIsAnErrorNamingIt) {
  KEEL_SKIP_WITHOUT_CUDA();
  Tensor x = to_gpu(testing::uniform({5, 7}, 2500));
  Tensor idx = to_gpu(from_vector<int64_t>({0, 7, 3}, {3}));
  EXPECT_KEEL_ERROR(kernels::index_select(x, 1, idx), "index 7", "position (1,)", "size 7");
  Tensor gi = to_gpu(from_vector<int64_t>({0, 1, 2, 3, 4, -1}, {2, 3}));
  EXPECT_KEEL_ERROR(kernels::gather(x, 1, gi), "index -1", "position (1, 2)");
  Tensor out = to_gpu(zeros({5, 7}));
  Tensor si = to_gpu(from_vector<int64_t>({0, 1, 9}, {1, 3}));
  EXPECT_KEEL_ERROR(kernels::scatter_add_(out, 1, si, to_gpu(ones({1, 3}))), "index 9");
}

TEST(CudaIndex, ConcatAndStackMatchCpuExactly) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::I32}) {
    Tensor a = testing::uniform({2, 3}, 2600, -9.0, 9.0).to(dt);
    Tensor b = testing::uniform({3, 4}, 2601, -9.0, 9.0).to(dt);  // used transposed: (4, 3)
    Tensor c = testing::uniform({1, 3}, 2602, -9.0, 9.0).to(dt);
    Tensor ag = to_gpu(a), bg = to_gpu(b), cg = to_gpu(c);
    poison_device_memory();
    expect_equal(kernels::concat({ag, bg.transpose(0, 1), cg}, 0),
                 kernels::concat({a, b.transpose(0, 1), c}, 0),
                 std::string("concat dim 0 ") + dtype_name(dt));
    Tensor d = testing::uniform({2, 5}, 2603, -9.0, 9.0).to(dt);
    expect_equal(kernels::concat({ag, to_gpu(d), ag}, -1), kernels::concat({a, d, a}, -1),
                 std::string("concat dim 1 ") + dtype_name(dt));
    expect_equal(kernels::stack({ag, ag, to_gpu(d).narrow(1, 1, 3)}, 1),
                 kernels::stack({a, a, d.narrow(1, 1, 3)}, 1),
                 std::string("stack dim 1 ") + dtype_name(dt));
  }
}

TEST(CudaAutograd, IndexingGradientsMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  auto [w, wg] = cuda_test::leaf_pair({19, 12}, 2700);
  auto [x, xg] = cuda_test::leaf_pair({6, 19}, 2701);
  Tensor ids = repeated_ids({3, 10}, 19, DType::I64, 2702);
  Tensor sel = from_vector<int64_t>({18, 2, 2, 7}, {4});
  std::vector<int64_t> gv(24);
  for (size_t k = 0; k < gv.size(); ++k) gv[k] = int64_t(k * 5 + 1) % 19;
  Tensor gidx = from_vector<int64_t>(gv, {6, 4});
  auto chain = [](const Tensor& table, const Tensor& xs, const Tensor& i, const Tensor& s,
                  const Tensor& g) {
    Tensor e = embedding(table, i);                        // (3, 10, 12)
    Tensor a = index_select(xs, 1, s);                     // (6, 4)
    Tensor b = gather(xs, 1, g);                           // (6, 4)
    Tensor c = concat({a, b, max(xs, 1, true).first}, 1);  // (6, 9)
    std::vector<Tensor> parts = split(c, {4, 5}, 1);       // (6, 4), (6, 5)
    return sum(square(e)) + sum(c * c * 0.5) + sum(stack({parts[0], a}, 0) * 1.5);
  };
  Tensor loss = chain(w, x, ids, sel, gidx);
  Tensor loss_g = chain(wg, xg, to_gpu(ids), to_gpu(sel), to_gpu(gidx));
  expect_close(loss_g, loss, Tol{1e-5, 1e-6}, "loss");
  loss.backward();
  loss_g.backward();
  expect_close(wg.grad(), w.grad(), Tol{1e-5, 1e-6}, "grad of the embedding table");
  expect_close(xg.grad(), x.grad(), Tol{1e-5, 1e-6}, "grad of x");
}

}  // namespace
}  // namespace keel
