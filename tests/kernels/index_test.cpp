// index_select, gather, scatter_add_, index_add_, concat, split, chunk, stack
// and max's scatter backward: forward against float64 coordinate-wise
// references, gradients against float64 finite differences, on several dims,
// with repeated indices, strided inputs, i32/i64 indices, and bad inputs.
#include "kernels/index.h"

#include <gtest/gtest.h>
#include <omp.h>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;
using testing::uniform;

Shape unravel(int64_t i, const Shape& s) {
  Shape idx(s.size());
  for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) {
    idx[size_t(d)] = i % s[size_t(d)];
    i /= s[size_t(d)];
  }
  return idx;
}

int64_t ravel(const Shape& idx, const Shape& s) {
  int64_t i = 0;
  for (size_t d = 0; d < s.size(); ++d) i = i * s[d] + idx[d];
  return i;
}

// out[p] = x[p with dim replaced by index[p]], p over index_shape (gather).
Doubles gather_ref(const Doubles& x, const Shape& xs, int64_t dim,
                   const std::vector<int64_t>& index, const Shape& is) {
  Doubles out;
  for (int64_t p = 0; p < shape_numel(is); ++p) {
    Shape c = unravel(p, is);
    c[size_t(dim)] = index[size_t(p)];
    out.push_back(x[size_t(ravel(c, xs))]);
  }
  return out;
}

// index_select as gather with the 1-D index spread over the other dims.
Doubles index_select_ref(const Doubles& x, const Shape& xs, int64_t dim,
                         const std::vector<int64_t>& index) {
  Shape os = xs;
  os[size_t(dim)] = int64_t(index.size());
  std::vector<int64_t> full;
  for (int64_t p = 0; p < shape_numel(os); ++p)
    full.push_back(index[size_t(unravel(p, os)[size_t(dim)])]);
  return gather_ref(x, xs, dim, full, os);
}

TEST(Index, IndexSelectOnEveryDimWithRepeats) {
  const Shape xs{3, 4, 5};
  const std::vector<int64_t> idx_by_dim[] = {{2, 0, 2}, {3, 1, 1, 0, 3}, {4, 4, 0, 2}};
  for (int64_t dim : {0, 1, 2, -1}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    const int64_t d = (dim + 3) % 3;
    const std::vector<int64_t>& iv = idx_by_dim[d];
    Tensor index = from_vector<int64_t>(iv, {int64_t(iv.size())});
    Tensor x = leaf(xs, 10 + uint64_t(d));
    Tensor y = check_op(
        [&](const std::vector<Tensor>& in) { return index_select(in[0], dim, index); },
        [&](const std::vector<Doubles>& in) { return index_select_ref(in[0], xs, d, iv); }, {x});
    EXPECT_EQ(y.size(d), int64_t(iv.size()));
  }
}

TEST(Index, IndexSelectStridedInputI32IndexAnd0dIndex) {
  Tensor x = uniform({5, 3}, 20).transpose(0, 1);  // (3, 5), strides (1, 3)
  x.set_requires_grad(true);
  const std::vector<int64_t> iv{4, 1, 4};
  Tensor index = from_vector<int32_t>({4, 1, 4}, {3});
  check_op([&](const std::vector<Tensor>& in) { return index_select(in[0], 1, index); },
           [&](const std::vector<Doubles>& in) {
             return index_select_ref(in[0], {3, 5}, 1, iv);
           },
           {x});
  Tensor y = index_select(x, 0, from_vector<int64_t>({2}, {}));
  EXPECT_EQ(y.sizes(), (Shape{1, 5}));
  EXPECT_EQ(testing::to_doubles(y), testing::to_doubles(x.select(0, 2)));
}

TEST(Index, GatherOnEveryDimWithRepeats) {
  const Shape xs{3, 4, 5};
  for (int64_t dim : {0, 1, 2}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    // The index is smaller than x off dim and longer than x along it.
    Shape is{2, 3, 4};
    is[size_t(dim)] = 6;
    std::vector<int64_t> iv;
    for (int64_t p = 0; p < shape_numel(is); ++p) iv.push_back((p * 7 + 3) % xs[size_t(dim)]);
    Tensor index = from_vector<int64_t>(iv, is);
    Tensor x = leaf(xs, 30 + uint64_t(dim));
    Tensor y = check_op(
        [&](const std::vector<Tensor>& in) { return gather(in[0], dim, index); },
        [&](const std::vector<Doubles>& in) { return gather_ref(in[0], xs, dim, iv, is); }, {x});
    EXPECT_EQ(y.sizes(), is);
  }
}

TEST(Index, GatherStridedIndexAndIntegerInput) {
  // A transposed i32 index and an i64 x (gathering ids).
  std::vector<int64_t> xv;
  for (int64_t i = 0; i < 12; ++i) xv.push_back(100 + i);
  Tensor x = from_vector<int64_t>(xv, {3, 4});
  Tensor index = from_vector<int32_t>({2, 0, 1, 1, 0, 2}, {2, 3}).transpose(0, 1);  // (3, 2)
  Tensor y = gather(x, 1, index);
  EXPECT_EQ(y.dtype(), DType::I64);
  // index rows: (2, 1), (0, 0), (1, 2)
  EXPECT_EQ(y.to_vector<int64_t>(), (std::vector<int64_t>{102, 101, 104, 104, 109, 110}));
}

// out[p with dim replaced by index[p]] += src[p], p over index_shape.
Doubles scatter_ref(Doubles out, const Shape& os, int64_t dim, const std::vector<int64_t>& index,
                    const Shape& is, const Doubles& src, const Shape& ss) {
  for (int64_t p = 0; p < shape_numel(is); ++p) {
    Shape c = unravel(p, is);
    const double v = src[size_t(ravel(c, ss))];
    c[size_t(dim)] = index[size_t(p)];
    out[size_t(ravel(c, os))] += v;
  }
  return out;
}

TEST(Index, ScatterAddSumsRepeatsOnEveryDim) {
  const Shape os{3, 4, 5}, ss{4, 5, 6};
  for (int64_t dim : {0, 1, 2}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    Shape is{2, 3, 4};
    is[size_t(dim)] = 4;
    std::vector<int64_t> iv;
    for (int64_t p = 0; p < shape_numel(is); ++p) iv.push_back((p * 5 + 1) % os[size_t(dim)]);
    Tensor out = uniform(os, 40), src = uniform(ss, 41);
    Doubles want =
        scatter_ref(testing::to_doubles(out), os, dim, iv, is, testing::to_doubles(src), ss);
    kernels::scatter_add_(out, dim, from_vector<int64_t>(iv, is), src);
    // f32 adds of a few terms in [-1, 1].
    EXPECT_TRUE(testing::all_close(testing::to_doubles(out), want, 1e-6, 1e-6));
  }
}

TEST(Index, ScatterAddHalfPrecisionAndLargeDeterministic) {
  // bf16 out: accumulated in f32, rounded once.
  Tensor out = zeros({2, 3}, DType::BF16);
  Tensor src = full({2, 4}, 1.0 / 3.0, DType::BF16);
  kernels::scatter_add_(out, 1, from_vector<int64_t>({0, 0, 0, 2, 1, 1, 1, 1}, {2, 4}), src);
  const float third = bf16_to_float(float_to_bf16(1.0f / 3.0f));
  auto r = [](float v) { return double(bf16_to_float(float_to_bf16(v))); };
  EXPECT_EQ(testing::to_doubles(out), (Doubles{r(3 * third), 0, r(third), 0, r(4 * third), 0}));

  // Big enough to split across threads; the same bits with one thread.
  const Shape os{16, 40000}, is{64, 40000};
  std::vector<int64_t> iv;
  for (int64_t p = 0; p < shape_numel(is); ++p) iv.push_back((p * 31 + p / 40000) % 16);
  Tensor index = from_vector<int64_t>(iv, is), big = uniform(is, 42);
  auto run = [&] {
    Tensor o = zeros(os);
    kernels::scatter_add_(o, 0, index, big);
    return o.to_vector<float>();
  };
  const int threads = omp_get_max_threads();
  std::vector<float> many = run();
  omp_set_num_threads(1);
  std::vector<float> one = run();
  omp_set_num_threads(threads);
  EXPECT_EQ(many, one);
  Doubles want = scatter_ref(Doubles(size_t(shape_numel(os)), 0.0), os, 0, iv, is,
                             testing::to_doubles(big), is);
  // Sums of ~4 f32 terms in [-1, 1], added in order.
  EXPECT_TRUE(testing::all_close(Doubles(many.begin(), many.end()), want, 1e-5, 1e-5));
}

TEST(Index, IndexAddIsTheAdjointOfIndexSelect) {
  Tensor out = uniform({4, 3}, 43);
  Tensor src = uniform({4, 5}, 44);
  const std::vector<int64_t> iv{2, 0, 2, 2, 1};
  Doubles want = testing::to_doubles(out), sd = testing::to_doubles(src);
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t l = 0; l < 5; ++l) want[size_t(r * 3 + iv[size_t(l)])] += sd[size_t(r * 5 + l)];
  kernels::index_add_(out, 1, from_vector<int64_t>(iv, {5}), src);
  // f32 adds of up to three terms in [-1, 1].
  EXPECT_TRUE(testing::all_close(testing::to_doubles(out), want, 1e-6, 1e-6));
}

TEST(Index, MaxBackwardScattersToTheArgmax) {
  const Shape xs{3, 4, 5};
  for (int64_t dim : {0, 1, 2}) {
    for (bool keep : {false, true}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + (keep ? " keepdim" : ""));
      Tensor x = leaf(xs, 50 + uint64_t(dim));
      auto ref = [&](const std::vector<Doubles>& in) {
        Shape os = xs;
        os[size_t(dim)] = 1;
        Doubles out;
        for (int64_t p = 0; p < shape_numel(os); ++p) {
          Shape c = unravel(p, os);
          double best = -1e300;
          for (int64_t i = 0; i < xs[size_t(dim)]; ++i) {
            c[size_t(dim)] = i;
            best = std::max(best, in[0][size_t(ravel(c, xs))]);
          }
          out.push_back(best);
        }
        return out;
      };
      check_op([&](const std::vector<Tensor>& in) { return max(in[0], dim, keep).first; }, ref,
               {x});
    }
  }
}

// Reference concat of row-major blocks along dim.
Doubles concat_ref(const std::vector<Doubles>& xs, const std::vector<Shape>& shapes, int64_t dim) {
  Shape os = shapes[0];
  os[size_t(dim)] = 0;
  for (const Shape& s : shapes) os[size_t(dim)] += s[size_t(dim)];
  Doubles out(size_t(shape_numel(os)));
  int64_t start = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    for (int64_t p = 0; p < shape_numel(shapes[k]); ++p) {
      Shape c = unravel(p, shapes[k]);
      c[size_t(dim)] += start;
      out[size_t(ravel(c, os))] = xs[k][size_t(p)];
    }
    start += shapes[k][size_t(dim)];
  }
  return out;
}

TEST(Concat, JoinsOnEveryDimWithGradients) {
  for (int64_t dim : {0, 1, 2, -1}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    const int64_t d = (dim + 3) % 3;
    std::vector<Shape> shapes;
    for (int64_t len : {2, 1, 3}) {
      Shape s{2, 3, 4};
      s[size_t(d)] = len;
      shapes.push_back(s);
    }
    std::vector<Tensor> xs;
    for (size_t k = 0; k < shapes.size(); ++k) xs.push_back(leaf(shapes[k], 60 + k));
    xs[1] = xs[1].detach();  // one input without gradient
    check_op([&](const std::vector<Tensor>& in) { return concat(in, dim); },
             [&](const std::vector<Doubles>& in) { return concat_ref(in, shapes, d); }, xs);
    EXPECT_FALSE(xs[1].grad().defined());
  }
}

TEST(Concat, StridedAndEmptyInputs) {
  Tensor a = uniform({4, 2}, 70).transpose(0, 1);  // (2, 4), strides (1, 2)
  a.set_requires_grad(true);
  Tensor e = zeros({2, 0});
  Tensor b = leaf({2, 3}, 71);
  check_op(
      [&](const std::vector<Tensor>& in) {
        return concat({in[0], e, in[1]}, 1);
      },
      [&](const std::vector<Doubles>& in) {
        return concat_ref({in[0], in[1]}, {{2, 4}, {2, 3}}, 1);
      },
      {a, b});
}

TEST(Split, ViewsWhoseGradientsFillTheirSlices) {
  for (int64_t dim : {0, 1, -1}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    const int64_t d = (dim + 3) % 3;
    Shape xs{4, 6, 5};
    Tensor x = leaf(xs, 80);
    const std::vector<int64_t> sizes = d == 0   ? std::vector<int64_t>{1, 2, 1}
                                       : d == 1 ? std::vector<int64_t>{3, 0, 1, 2}
                                                : std::vector<int64_t>{2, 2, 1};
    std::vector<Tensor> parts = split(x, sizes, dim);
    ASSERT_EQ(parts.size(), sizes.size());
    for (size_t i = 0; i < parts.size(); ++i) {
      EXPECT_EQ(parts[i].size(d), sizes[i]);
      EXPECT_EQ(parts[i].storage(), x.storage());  // a view, no copy
    }
    // Round trip: concat(split(x)) == x, gradients through every chunk.
    check_op([&](const std::vector<Tensor>& in) { return concat(split(in[0], sizes, dim), dim); },
             [](const std::vector<Doubles>& in) { return in[0]; }, {x});
    // Only some chunks used: the others' slices of x.grad are zero.
    const size_t last = sizes.size() - 1;
    Tensor y = concat({split(x, sizes, dim)[last], split(x, sizes, dim)[0]}, dim);
    x.set_grad(Tensor());
    sum(y).backward();
    Doubles g = testing::to_doubles(x.grad());
    int64_t lo_end = sizes[0], hi_start = xs[size_t(d)] - sizes[last];
    for (int64_t p = 0; p < shape_numel(xs); ++p) {
      int64_t i = unravel(p, xs)[size_t(d)];
      EXPECT_EQ(g[size_t(p)], (i < lo_end || i >= hi_start) ? 1.0 : 0.0) << "position " << p;
    }
  }
}

TEST(Chunk, SizesFollowTorchAndGradientsRoundTrip) {
  EXPECT_EQ(kernels::chunk_sizes(5, 3), (std::vector<int64_t>{2, 2, 1}));
  EXPECT_EQ(kernels::chunk_sizes(6, 4), (std::vector<int64_t>{2, 2, 2}));  // fewer than asked
  EXPECT_EQ(kernels::chunk_sizes(2, 5), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(kernels::chunk_sizes(0, 3), (std::vector<int64_t>{0, 0, 0}));
  Tensor x = leaf({3, 7}, 90);
  std::vector<Tensor> parts = chunk(x, 3, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[2].sizes(), (Shape{3, 1}));
  // Chunks joined in reverse order: the gradient of x is the permuted weights.
  check_op(
      [](const std::vector<Tensor>& in) {
        std::vector<Tensor> p = chunk(in[0], 3, -1);
        return concat({p[2], p[1], p[0]}, 1);
      },
      [](const std::vector<Doubles>& in) {
        Doubles out;
        for (int64_t r = 0; r < 3; ++r)
          for (int64_t c : {6, 3, 4, 5, 0, 1, 2}) out.push_back(in[0][size_t(r * 7 + c)]);
        return out;
      },
      {x});
}

TEST(Stack, NewDimAnywhereWithGradients) {
  for (int64_t dim : {0, 1, 2, -1}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    const int64_t d = (dim + 3) % 3;
    std::vector<Tensor> xs{leaf({2, 3}, 100), leaf({2, 3}, 101), leaf({2, 3}, 102)};
    Tensor y = check_op([&](const std::vector<Tensor>& in) { return stack(in, dim); },
                        [&](const std::vector<Doubles>& in) {
                          std::vector<Shape> shapes(3, Shape{2, 3});
                          for (Shape& s : shapes) s.insert(s.begin() + d, 1);
                          return concat_ref(in, shapes, d);
                        },
                        xs);
    EXPECT_EQ(y.size(d), 3);
    EXPECT_EQ(y.dim(), 3);
  }
}

TEST(Index, BadInputsNameShapesAndIndices) {
  Tensor x = zeros({3, 4});
  EXPECT_KEEL_ERROR(index_select(x, 1, zeros({2})), "index_select", "i32 or i64", "f32");
  EXPECT_KEEL_ERROR(index_select(x, 1, from_vector<int64_t>({0, 4}, {2})), "index_select",
                    "index 4", "position (1,)", "dim 1 of size 4", "(3, 4)");
  EXPECT_KEEL_ERROR(index_select(x, 2, from_vector<int64_t>({0}, {1})), "dim 2", "2 dims");
  EXPECT_KEEL_ERROR(index_select(x, 0, from_vector<int64_t>({0}, {1, 1})), "1-D", "(1, 1)");
  EXPECT_KEEL_ERROR(gather(x, 0, from_vector<int64_t>({0, 1}, {2})), "gather", "(2,)", "(3, 4)");
  EXPECT_KEEL_ERROR(gather(x, 0, from_vector<int64_t>({0, 1, 0, -1}, {1, 4})), "gather", "index -1",
                    "position (0, 3)", "dim 0 of size 3");
  EXPECT_KEEL_ERROR(gather(x, 0, from_vector<int64_t>({0, 0, 0, 0, 0}, {1, 5})), "gather", "(1, 5)",
                    "(3, 4)", "dim 1");
  Tensor out = zeros({3, 4});
  EXPECT_KEEL_ERROR(kernels::scatter_add_(out, 0, from_vector<int64_t>({3}, {1, 1}), zeros({1, 1})),
                    "scatter_add_", "index 3", "dim 0 of size 3");
  EXPECT_KEEL_ERROR(kernels::scatter_add_(out, 0, zeros({1, 1}), zeros({1, 1})), "scatter_add_",
                    "i32 or i64");
  EXPECT_KEEL_ERROR(concat({zeros({2, 3}), zeros({3, 3})}, 1), "concat", "(3, 3)", "(2, 3)");
  EXPECT_KEEL_ERROR(concat({zeros({2, 3}), zeros({2, 3}, DType::BF16)}, 0), "concat", "bf16");
  EXPECT_KEEL_ERROR(stack({zeros({2, 3}), zeros({3, 2})}, 0), "stack", "(3, 2)", "(2, 3)");
  EXPECT_KEEL_ERROR(split(zeros({5, 2}), {2, 2}, 0), "split", "(2, 2)", "(5, 2)");
  EXPECT_KEEL_ERROR(chunk(zeros({5, 2}), 0, 0), "chunk", "positive");
}

}  // namespace
}  // namespace keel
