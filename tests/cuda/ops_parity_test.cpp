// CUDA against CPU: elementwise ops (dense vectorised path, odd tails,
// strided and broadcast operands, in-place forms), reductions (every kernel
// shape: warp and block rows, the contiguous-kept "outer" case, rows split
// into segments), max with ties and NaN, and softmax / log-softmax along
// the last and other dims, forward and backward, then through autograd.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/elementwise.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"
#include "tests/cuda/parity.h"

namespace keel {
namespace {

using cuda_test::expect_close;
using cuda_test::expect_equal;
using cuda_test::poison_device_memory;
using cuda_test::to_gpu;
using cuda_test::tol_for;
using kernels::BinaryOp;
using kernels::UnaryOp;

const DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16};

const UnaryOp kUnaryOps[] = {UnaryOp::Neg,      UnaryOp::Exp,    UnaryOp::Log,      UnaryOp::Sqrt,
                             UnaryOp::Rsqrt,    UnaryOp::Tanh,   UnaryOp::Sigmoid,  UnaryOp::Silu,
                             UnaryOp::Softplus, UnaryOp::Gelu,   UnaryOp::GeluTanh, UnaryOp::Relu,
                             UnaryOp::Abs,      UnaryOp::Square, UnaryOp::Sin};

const BinaryOp kBinaryOps[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div,
                               BinaryOp::Pow, BinaryOp::Max, BinaryOp::Min, BinaryOp::Eq};

bool needs_positive(UnaryOp op) {
  return op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt;
}

std::string label(const char* what, const char* op, DType dt) {
  return std::string(what) + " " + op + " " + dtype_name(dt);
}

TEST(CudaElementwise, UnaryForwardAndBackwardMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 100;
  for (DType dt : kFloatTypes) {
    for (UnaryOp op : kUnaryOps) {
      const double lo = needs_positive(op) ? 0.1 : -4.0, hi = needs_positive(op) ? 3.0 : 4.0;
      const char* name = kernels::unary_name(op);
      // 1031 elements: not a whole number of 16-byte packs, so the tail runs too.
      Tensor x = testing::uniform({1031}, ++seed, lo, hi, dt);
      Tensor xg = to_gpu(x);
      poison_device_memory();
      Tensor y = kernels::unary(op, x), yg = kernels::unary(op, xg);
      expect_close(yg, y, tol_for(dt), label("unary dense", name, dt));

      // A transposed view takes the strided kernel.
      Tensor base = testing::uniform({13, 17}, ++seed, lo, hi, dt);
      Tensor bg = to_gpu(base);
      poison_device_memory();
      expect_close(kernels::unary(op, bg.transpose(0, 1)), kernels::unary(op, base.transpose(0, 1)),
                   tol_for(dt), label("unary strided", name, dt));

      // Backward from the CPU's y on both sides, so only the derivative kernel differs.
      Tensor dy = testing::uniform({1031}, ++seed, -1.0, 1.0, dt);
      poison_device_memory();
      expect_close(kernels::unary_backward(op, xg, to_gpu(y), to_gpu(dy)),
                   kernels::unary_backward(op, x, y, dy), tol_for(dt),
                   label("unary backward", name, dt));
    }
  }
}

TEST(CudaElementwise, BinaryBroadcastDenseAndStridedMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 200;
  for (DType dt : kFloatTypes) {
    for (BinaryOp op : kBinaryOps) {
      const char* name = kernels::binary_name(op);
      // Pow needs a positive base; Div a denominator away from 0.
      const double alo = op == BinaryOp::Pow ? 0.5 : -2.0, ahi = 2.0;
      const double blo = op == BinaryOp::Div ? 0.5 : -2.0, bhi = 2.0;
      // Broadcast: (4, 1, 6) with (3, 6) -> (4, 3, 6).
      Tensor a = testing::uniform({4, 1, 6}, ++seed, alo, ahi, dt);
      Tensor b = testing::uniform({3, 6}, ++seed, blo, bhi, dt);
      poison_device_memory();
      expect_close(kernels::binary(op, to_gpu(a), to_gpu(b)), kernels::binary(op, a, b),
                   tol_for(dt), label("binary broadcast", name, dt));

      // Same shape, dense: the vectorised kernel (2 * 515 elements: a tail too).
      Tensor c = testing::uniform({2, 515}, ++seed, alo, ahi, dt);
      Tensor d = testing::uniform({2, 515}, ++seed, blo, bhi, dt);
      if (op == BinaryOp::Eq) d.narrow(1, 0, 300).copy_(c.narrow(1, 0, 300));  // some equal
      poison_device_memory();
      expect_close(kernels::binary(op, to_gpu(c), to_gpu(d)), kernels::binary(op, c, d),
                   tol_for(dt), label("binary dense", name, dt));

      // A transposed operand against a dense one.
      Tensor e = testing::uniform({9, 5}, ++seed, alo, ahi, dt);
      Tensor f = testing::uniform({5, 9}, ++seed, blo, bhi, dt);
      poison_device_memory();
      expect_close(kernels::binary(op, to_gpu(e).transpose(0, 1), to_gpu(f)),
                   kernels::binary(op, e.transpose(0, 1), f), tol_for(dt),
                   label("binary strided", name, dt));

      // Scalar on either side (Div/Pow: the tensor side stays positive).
      Tensor s = testing::uniform({77}, ++seed, 0.5, 2.0, dt);
      for (bool first : {false, true}) {
        poison_device_memory();
        expect_close(kernels::binary_scalar(op, to_gpu(s), 1.7, first),
                     kernels::binary_scalar(op, s, 1.7, first), tol_for(dt),
                     label(first ? "scalar first" : "scalar second", name, dt));
      }
    }
  }
}

TEST(CudaElementwise, AxpbyAndInPlaceOpsMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes) {
    Tensor a = testing::uniform({5, 7}, 301, -1.0, 1.0, dt);
    Tensor b = testing::uniform({7}, 302, -1.0, 1.0, dt);
    poison_device_memory();
    expect_close(kernels::axpby(0.75, to_gpu(a), -1.25, to_gpu(b)),
                 kernels::axpby(0.75, a, -1.25, b), tol_for(dt), label("axpby", "", dt));

    // add_ into a transposed view with a broadcast source; the whole base is
    // compared, so an element written twice or not at all shows.
    Tensor base = testing::uniform({5, 7}, 303, -1.0, 1.0, dt);
    Tensor src = testing::uniform({5}, 304, -1.0, 1.0, dt);
    Tensor base_g = to_gpu(base);
    Tensor dst = base.transpose(0, 1), dst_g = base_g.transpose(0, 1);  // (7, 5) views
    kernels::add_(dst, src, 0.5);
    kernels::add_(dst_g, to_gpu(src), 0.5);
    expect_close(base_g, base, tol_for(dt), label("add_", "", dt));

    // mul_scalar_ on a narrow (non-contiguous) view: the columns outside it stay.
    Tensor m = testing::uniform({6, 8}, 305, -1.0, 1.0, dt);
    Tensor m_g = to_gpu(m);
    Tensor mv = m.narrow(1, 2, 4), mv_g = m_g.narrow(1, 2, 4);
    kernels::mul_scalar_(mv, -3.0);
    kernels::mul_scalar_(mv_g, -3.0);
    expect_close(m_g, m, tol_for(dt), label("mul_scalar_", "", dt));

    // Dense in place: add_ on whole contiguous tensors (the vectorised kernel aliasing its input).
    Tensor p = testing::uniform({1029}, 306, -1.0, 1.0, dt);
    Tensor q = testing::uniform({1029}, 307, -1.0, 1.0, dt);
    Tensor p_g = to_gpu(p);
    kernels::add_(p, q, -2.0);
    kernels::add_(p_g, to_gpu(q), -2.0);
    expect_close(p_g, p, tol_for(dt), label("add_ dense", "", dt));
  }
}

struct ReduceCase {
  Shape shape;
  std::vector<int64_t> dims;
  bool keepdim;
  const char* why;
};

const ReduceCase kReduceCases[] = {
    {{6, 50, 7}, {}, false, "all dims"},
    {{6, 50, 7}, {1}, false, "middle dim: kept (6, 7) ends contiguous but short"},
    {{6, 50, 7}, {0, 2}, true, "two dims, keepdim"},
    {{6, 50, 7}, {-1}, false, "last dim: one warp per row"},
    {{300, 64}, {0}, false, "outer: kept contiguous"},
    {{2, 3000, 33}, {1}, false, "outer: kept (2, 33) with an inner contiguous run"},
    {{5000, 40}, {0}, false, "outer split into segments (few columns, many rows)"},
    {{3, 70001}, {1}, false, "long rows: a block each, split into segments"},
    {{70001, 3}, {0}, true, "long strided rows: block per row, segments"},
    {{9000}, {0}, false, "one long row"},
};

TEST(CudaReduce, SumMeanVarMatchCpuOnEveryKernelShape) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 400;
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const ReduceCase& rc : kReduceCases) {
      Tensor x = testing::uniform(rc.shape, ++seed, -1.0, 1.0, dt);
      Tensor xg = to_gpu(x);
      const std::string what = std::string(rc.why) + " " + dtype_name(dt);
      // Both sides accumulate in f64; only the final rounding can differ.
      poison_device_memory();
      expect_close(kernels::sum(xg, rc.dims, rc.keepdim), kernels::sum(x, rc.dims, rc.keepdim),
                   tol_for(dt), "sum " + what);
      poison_device_memory();
      expect_close(kernels::mean(xg, rc.dims, rc.keepdim), kernels::mean(x, rc.dims, rc.keepdim),
                   tol_for(dt), "mean " + what);
      for (int64_t corr : {0, 1}) {
        poison_device_memory();
        expect_close(kernels::var(xg, rc.dims, corr, rc.keepdim),
                     kernels::var(x, rc.dims, corr, rc.keepdim), tol_for(dt), "var " + what);
      }
    }
    // A transposed input (strided reduced and kept dims).
    Tensor x = testing::uniform({8, 20, 30}, ++seed, -1.0, 1.0, dt);
    Tensor xt = x.transpose(0, 2), xgt = to_gpu(x).transpose(0, 2);  // (30, 20, 8) views
    expect_close(kernels::sum(xgt, {1}, false), kernels::sum(xt, {1}, false), tol_for(dt),
                 "sum of a transposed view");
    expect_close(kernels::var(xgt, {0, 2}, 1, false), kernels::var(xt, {0, 2}, 1, false),
                 tol_for(dt), "var of a transposed view");
    // sum_to: the gradient of a broadcast.
    Tensor s = testing::uniform({4, 3, 5}, ++seed, -1.0, 1.0, dt);
    expect_close(kernels::sum_to(to_gpu(s), {3, 1}), kernels::sum_to(s, {3, 1}), tol_for(dt),
                 "sum_to");
  }
}

TEST(CudaReduce, VarOfTooFewElementsIsNaNOnBoth) {
  KEEL_SKIP_WITHOUT_CUDA();
  Tensor x = testing::uniform({4, 1}, 450);
  expect_close(kernels::var(to_gpu(x), {1}, 1, false), kernels::var(x, {1}, 1, false),
               tol_for(DType::F32), "var with n - correction = 0");
}

TEST(CudaReduce, MaxValuesAndIndicesMatchCpuWithTiesAndNaN) {
  KEEL_SKIP_WITHOUT_CUDA();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Row 0: a tie (first index wins); row 1: NaNs (the first NaN wins);
  // row 2: all equal; row 3: -inf only.
  const float inf = std::numeric_limits<float>::infinity();
  Tensor x = from_vector<float>({1,    3,    3,    2,    5,  //
                                 nan,  5,    nan,  1,    9,  //
                                 4,    4,    4,    4,    4,  //
                                 -inf, -inf, -inf, -inf, -inf},
                                {4, 5});
  for (int64_t dim : {0, 1}) {
    auto [v, i] = kernels::max(x, dim, false);
    auto [vg, ig] = kernels::max(to_gpu(x), dim, false);
    expect_equal(vg, v, "max values, dim " + std::to_string(dim));
    expect_equal(ig, i, "max indices, dim " + std::to_string(dim));
  }
  uint64_t seed = 460;
  const std::pair<Shape, int64_t> cases[] = {{{6, 50, 7}, 1}, {{6, 50, 7}, 0}, {{6, 50, 7}, -1},
                                             {{300, 64}, 0},  {{4, 5000}, 1},  {{3, 70001}, 1},
                                             {{70001, 3}, 0}};
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const auto& [shape, dim] : cases) {
      // bf16 draws repeat values often, so ties are exercised too.
      Tensor r = testing::uniform(shape, ++seed, -1.0, 1.0, dt);
      auto [v, i] = kernels::max(r, dim, true);
      poison_device_memory();
      auto [vg, ig] = kernels::max(to_gpu(r), dim, true);
      const std::string what = shape_str(shape) + " dim " + std::to_string(dim);
      expect_equal(vg, v, "max values " + what);
      expect_equal(ig, i, "max indices " + what);
    }
  }
}

struct SoftmaxCase {
  Shape shape;
  int64_t dim;
  const char* why;
};

const SoftmaxCase kSoftmaxCases[] = {
    {{9, 37}, -1, "short rows: a warp each"},
    {{5, 3000}, -1, "long rows: a 256-thread block each"},
    {{3, 10000}, -1, "very long rows: a 1024-thread block each"},
    {{4, 33, 5}, 1, "middle dim: one thread per column"},
    {{4, 33, 5}, 0, "first dim"},
};

TEST(CudaSoftmax, ForwardAndBackwardMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 500;
  for (DType dt : kFloatTypes) {
    for (const SoftmaxCase& sc : kSoftmaxCases) {
      Tensor x32 = testing::uniform(sc.shape, ++seed, -5.0, 5.0);
      if (sc.dim == -1) {
        // Masked entries (-inf) in row 0, and a fully masked row 1 (NaN on both).
        x32.select(0, 0).narrow(0, 0, 3).fill_(-cuda_test::kInf);
        x32.select(0, 1).fill_(-cuda_test::kInf);
      }
      Tensor x = x32.to(dt), xg = to_gpu(x);
      Tensor dy = testing::uniform(sc.shape, ++seed, -1.0, 1.0, dt), dyg = to_gpu(dy);
      for (bool log : {false, true}) {
        const std::string what =
            std::string(log ? "log_softmax " : "softmax ") + sc.why + " " + dtype_name(dt);
        poison_device_memory();
        Tensor y = log ? kernels::log_softmax(x, sc.dim) : kernels::softmax(x, sc.dim);
        Tensor yg = log ? kernels::log_softmax(xg, sc.dim) : kernels::softmax(xg, sc.dim);
        expect_close(yg, y, tol_for(dt), what);
        // Backward from the CPU's y on both sides.
        poison_device_memory();
        Tensor dx = log ? kernels::log_softmax_backward(y, dy, sc.dim)
                        : kernels::softmax_backward(y, dy, sc.dim);
        Tensor dxg = log ? kernels::log_softmax_backward(to_gpu(y), dyg, sc.dim)
                         : kernels::softmax_backward(to_gpu(y), dyg, sc.dim);
        expect_close(dxg, dx, tol_for(dt), "backward " + what);
      }
    }
  }
}

TEST(CudaAutograd, ElementwiseReduceSoftmaxChainGradientsMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  auto [a, ag] = cuda_test::leaf_pair({6, 40}, 601);
  auto [b, bg] = cuda_test::leaf_pair({40}, 602, 0.5, 1.5);
  auto run = [](const Tensor& x, const Tensor& w) {
    Tensor h = gelu_tanh(x) * w + silu(x);                       // (6, 40), broadcast over rows
    Tensor p = softmax(h, -1);                                   // (6, 40)
    Tensor l = log_softmax(h * 2.0, 0);                          // (6, 40)
    Tensor v = var(h, {1}, 1, false);                            // (6)
    return sum(p * l) + mean(v) + sum(square(max(h, 1).first));  // ()
  };
  Tensor loss = run(a, b), loss_g = run(ag, bg);
  expect_close(loss_g, loss, cuda_test::Tol{1e-5, 1e-6}, "loss");
  loss.backward();
  loss_g.backward();
  expect_close(ag.grad(), a.grad(), cuda_test::Tol{1e-5, 1e-6}, "grad of x");
  // Summed over the 6 rows: a little more rounding.
  expect_close(bg.grad(), b.grad(), cuda_test::Tol{1e-5, 1e-5}, "grad of w");
}

}  // namespace
}  // namespace keel
