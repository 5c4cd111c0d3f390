// CUDA against CPU: dropout masks (identical, from the same Philox stream,
// for whole tensors and for shards addressed by a box),
// fused AdamW (single tensor and multi-tensor, mixed dtypes, chunk
// boundaries, misaligned tensors), sum of squares, and the depthwise causal
// conv1d forward and backward (strided inputs, K above and below T, more
// taps than one pass holds), also through autograd. The multi-tensor AdamW's
// CPU loop is checked against single-tensor steps without a GPU as well.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/conv1d.h"
#include "kernels/dropout.h"
#include "tests/cuda/parity.h"

namespace keel {
namespace {

using cuda_test::expect_close;
using cuda_test::expect_equal;
using cuda_test::poison_device_memory;
using cuda_test::to_gpu;
using cuda_test::Tol;
using cuda_test::tol_for;
using cuda_test::tol_for_sums;

TEST(CudaDropout, MasksAndValuesAreTheCpusExactly) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (double p : {0.1, 0.5, 0.9}) {
      // 37 * 129 elements: not a multiple of 4, so the last Philox group is partial.
      Tensor x = testing::uniform({37, 129}, 3000, 0.5, 1.5, dt);
      poison_device_memory();
      // The same f32 multiply on both sides, rounded once: equal bit for bit.
      expect_equal(kernels::dropout(to_gpu(x), p, 42, 5), kernels::dropout(x, p, 42, 5),
                   "dropout " + std::to_string(p) + " " + dtype_name(dt));
      expect_equal(kernels::dropout_backward(to_gpu(x), p, 42, 6),
                   kernels::dropout_backward(x, p, 42, 6),
                   "dropout backward " + std::to_string(p) + " " + dtype_name(dt));
      // A strided view: the mask follows the row-major position, not memory.
      Tensor base = testing::uniform({129, 37}, 3001, 0.5, 1.5, dt);
      expect_equal(kernels::dropout(to_gpu(base).transpose(0, 1), p, 7, 0),
                   kernels::dropout(base.transpose(0, 1), p, 7, 0),
                   "dropout strided " + std::to_string(p) + " " + dtype_name(dt));
    }
  }
}

TEST(CudaDropout, AutogradMasksAndGradientsMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  auto [x, xg] = cuda_test::leaf_pair({33, 17}, 3010, -1.0, 1.0);
  Generator gen_c(99), gen_g(99);
  Tensor y = dropout(x, 0.3, true, gen_c), yg = dropout(xg, 0.3, true, gen_g);
  expect_equal(yg, y, "dropout through autograd");
  Tensor w = testing::uniform({33, 17}, 3011);
  Tensor loss = sum(y * w), loss_g = sum(yg * to_gpu(w));
  loss.backward();
  loss_g.backward();
  expect_equal(xg.grad(), x.grad(), "dropout gradient");
}

// Boxes: a GPU shard (a strided narrow() view) along each dim, a tile, and
// the many-row case equal the CPU's draw of the same box and the whole
// tensor's slice, bit for bit, forward and backward.
TEST(CudaDropout, BoxesMatchTheCpuAndTheWholeTensorsSlice) {
  KEEL_SKIP_WITHOUT_CUDA();
  struct Case {
    Shape shape;
    int64_t dim, count;
  };
  // (B, T, C) with dims not multiples of 4; (B, H, T, T) by heads; and a
  // channel shard with many short runs (runs of 3).
  const Case cases[] = {{{4, 6, 10}, 0, 2},
                        {{4, 6, 10}, 1, 2},
                        {{4, 6, 10}, 2, 2},
                        {{2, 4, 5, 5}, 1, 4},
                        {{64, 33, 12}, 2, 4}};
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const Case& c : cases) {
      const std::string what =
          shape_str(c.shape) + " dim " + std::to_string(c.dim) + " " + dtype_name(dt);
      Tensor x = testing::uniform(c.shape, 3002, 0.5, 1.5, dt);
      Tensor whole = kernels::dropout(x, 0.4, 11, 3),
             whole_b = kernels::dropout_backward(x, 0.4, 11, 3);
      const int64_t n = c.shape[size_t(c.dim)] / c.count;
      for (int64_t k = 0; k < c.count; ++k) {
        std::vector<int64_t> start(c.shape.size(), 0);
        start[size_t(c.dim)] = k * n;
        const kernels::DropoutBox box{c.shape, start};
        Tensor part = x.narrow(c.dim, k * n, n);
        poison_device_memory();
        Tensor got = kernels::dropout(to_gpu(x).narrow(c.dim, k * n, n), 0.4, 11, 3, box);
        expect_equal(got, kernels::dropout(part, 0.4, 11, 3, box), "box " + what);
        expect_equal(got, whole.narrow(c.dim, k * n, n).contiguous(), "box slice " + what);
        expect_equal(kernels::dropout_backward(to_gpu(part.contiguous()), 0.4, 11, 3, box),
                     whole_b.narrow(c.dim, k * n, n).contiguous(), "box backward " + what);
      }
    }
  }
  // A tile in two dims.
  Tensor x = testing::uniform({3, 8, 10}, 3003, 0.5, 1.5);
  const kernels::DropoutBox box{{3, 8, 10}, {0, 2, 5}};
  expect_equal(kernels::dropout(to_gpu(x).narrow(1, 2, 4).narrow(2, 5, 5), 0.5, 21, 2, box),
               kernels::dropout(x.narrow(1, 2, 4).narrow(2, 5, 5), 0.5, 21, 2, box), "tile");
}

kernels::AdamWStep make_step(int64_t step) {
  kernels::AdamWStep hp;
  hp.lr = 1e-2;
  hp.beta1 = 0.9;
  hp.beta2 = 0.95;
  hp.eps = 1e-8;
  hp.weight_decay = 0.1;
  hp.step = step;
  hp.grad_scale = 0.5;
  return hp;
}

// One optimizer state: param, grad, m, v.
struct State {
  Tensor p, g, m, v;
  State gpu() const { return {to_gpu(p), to_gpu(g), to_gpu(m), to_gpu(v)}; }
};

State make_state(int64_t n, DType pdt, DType gdt, uint64_t seed) {
  return {testing::uniform({n}, seed, -1.0, 1.0, pdt),
          testing::uniform({n}, seed + 1, -1.0, 1.0, gdt),
          testing::uniform({n}, seed + 2, -0.1, 0.1), testing::uniform({n}, seed + 3, 0.0, 0.01)};
}

// AdamW is elementwise f32 arithmetic; the GPU may fuse a multiply-add the
// CPU rounds twice, so a few ulp: 1e-5 relative; bf16/f16 params round on store.
void expect_state_close(const State& g, const State& c, const std::string& what) {
  expect_close(g.p, c.p, tol_for(c.p.dtype()), "param " + what);
  expect_close(g.m, c.m, tol_for(DType::F32), "m " + what);
  expect_close(g.v, c.v, tol_for(DType::F32), "v " + what);
}

TEST(CudaAdamW, SingleTensorStepsMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  const std::pair<DType, DType> kinds[] = {{DType::F32, DType::F32},
                                           {DType::BF16, DType::F32},
                                           {DType::F32, DType::BF16},
                                           {DType::F16, DType::F16}};
  uint64_t seed = 3100;
  for (auto [pdt, gdt] : kinds) {
    for (int64_t n : {1, 7, 1000, 16384 * 2 + 3}) {
      seed += 10;
      State c = make_state(n, pdt, gdt, seed), g = c.gpu();
      for (int64_t step = 1; step <= 3; ++step) {
        kernels::adamw_step(c.p, c.g, c.m, c.v, make_step(step));
        kernels::adamw_step(g.p, g.g, g.m, g.v, make_step(step));
      }
      expect_state_close(g, c, std::to_string(n) + " " + dtype_name(pdt) + "/" + dtype_name(gdt));
    }
  }
  // A contiguous view one element into its storage: not 16-byte aligned, so
  // the one-at-a-time path runs.
  State c = make_state(1001, DType::F32, DType::F32, 3190), g = c.gpu();
  auto off = [](const State& s) {
    return State{s.p.narrow(0, 1, 1000), s.g.narrow(0, 1, 1000), s.m.narrow(0, 1, 1000),
                 s.v.narrow(0, 1, 1000)};
  };
  State cv = off(c), gv = off(g);
  kernels::adamw_step(cv.p, cv.g, cv.m, cv.v, make_step(1));
  kernels::adamw_step(gv.p, gv.g, gv.m, gv.v, make_step(1));
  expect_state_close(g, c, "misaligned view");
}

std::vector<State> make_group(uint64_t seed) {
  // Sizes around the 16384-element chunk, odd sizes, mixed dtypes.
  const std::pair<int64_t, std::pair<DType, DType>> spec[] = {
      {3, {DType::F32, DType::F32}},
      {16384, {DType::F32, DType::F32}},
      {16384 * 2 + 5, {DType::F32, DType::F32}},
      {1, {DType::F32, DType::F32}},
      {777, {DType::BF16, DType::F32}},
      {20000, {DType::BF16, DType::F32}},
      {64, {DType::F32, DType::BF16}},
      {0, {DType::F32, DType::F32}},
  };
  std::vector<State> out;
  for (const auto& [n, kinds] : spec)
    out.push_back(make_state(n, kinds.first, kinds.second, seed += 10));
  return out;
}

void step_multi(std::vector<State>& group, const kernels::AdamWStep& hp) {
  std::vector<Tensor> p, g, m, v;
  for (State& s : group) {
    p.push_back(s.p);
    g.push_back(s.g);
    m.push_back(s.m);
    v.push_back(s.v);
  }
  kernels::adamw_step_multi(p, g, m, v, hp);
}

// Runs without a GPU: the CPU loop is the single-tensor step, bit for bit.
TEST(AdamWMulti, CpuLoopIsTheSingleTensorStep) {
  std::vector<State> multi = make_group(3200), single = make_group(3200);
  for (int64_t step = 1; step <= 2; ++step) {
    step_multi(multi, make_step(step));
    for (State& s : single) kernels::adamw_step(s.p, s.g, s.m, s.v, make_step(step));
  }
  for (size_t i = 0; i < multi.size(); ++i) {
    const std::string what = "tensor " + std::to_string(i);
    EXPECT_TRUE(
        testing::all_close(testing::to_doubles(multi[i].p), testing::to_doubles(single[i].p), 0, 0))
        << what;
    EXPECT_TRUE(
        testing::all_close(testing::to_doubles(multi[i].m), testing::to_doubles(single[i].m), 0, 0))
        << what;
    EXPECT_TRUE(
        testing::all_close(testing::to_doubles(multi[i].v), testing::to_doubles(single[i].v), 0, 0))
        << what;
  }
}

TEST(AdamWMulti, MismatchedListsAndDevicesAreErrors) {
  std::vector<State> group = make_group(3250);
  std::vector<Tensor> p{group[0].p, group[1].p}, g{group[0].g}, m{group[0].m, group[1].m},
      v{group[0].v, group[1].v};
  EXPECT_KEEL_ERROR(kernels::adamw_step_multi(p, g, m, v, make_step(1)), "adamw_step_multi",
                    "2 params but 1 grads");
  std::vector<Tensor> g2{group[0].g, group[2].g};  // wrong shape for param 1
  EXPECT_KEEL_ERROR(kernels::adamw_step_multi(p, g2, m, v, make_step(1)), "shapes differ");
}

TEST(CudaAdamW, MultiTensorStepMatchesCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  std::vector<State> c = make_group(3300);
  std::vector<State> g;
  for (const State& s : c) g.push_back(s.gpu());
  for (int64_t step = 1; step <= 3; ++step) {
    step_multi(c, make_step(step));
    step_multi(g, make_step(step));
  }
  for (size_t i = 0; i < c.size(); ++i)
    expect_state_close(g[i], c[i], "tensor " + std::to_string(i));
}

TEST(CudaAdamW, SumSquaresMatchesCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t n : {1, 1000, 100003, 5000000}) {
      Tensor x = testing::uniform({n}, 3400 + uint64_t(n), -2.0, 2.0, dt);
      const double want = kernels::sum_squares(x);
      const double got = kernels::sum_squares(to_gpu(x));
      // f64 sums of the same f64 squares in two orders.
      EXPECT_NEAR(got, want, 1e-10 * want) << n << " " << dtype_name(dt);
      EXPECT_EQ(kernels::sum_squares(to_gpu(x)), got) << "run twice";
    }
    // A strided view is made contiguous by the launcher.
    Tensor base = testing::uniform({30, 40}, 3450, -1.0, 1.0, dt);
    EXPECT_NEAR(kernels::sum_squares(to_gpu(base).transpose(0, 1)),
                kernels::sum_squares(base.transpose(0, 1)), 1e-10 * 1200);
  }
}

TEST(CudaAdamW, SumSquaresMultiMatchesCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  // A parameter set's gradients: mixed sizes (an empty one too) and dtypes.
  std::vector<Tensor> c, g;
  int64_t k = 0;
  for (int64_t n : {768, 0, 2304 * 768, 1, 50304 * 64, 3072}) {
    const DType dt = k % 3 == 2 ? DType::BF16 : DType::F32;
    c.push_back(testing::uniform({n}, 3500 + uint64_t(k++), -1.0, 1.0, dt));
    g.push_back(to_gpu(c.back()));
  }
  double want = 0;
  for (const Tensor& x : c) want += kernels::sum_squares(x);
  EXPECT_EQ(kernels::sum_squares_multi(c), want);  // CPU: the per-tensor sums in order
  const double got = kernels::sum_squares_multi(g);
  EXPECT_NEAR(got, want, 1e-10 * want);  // f64 sums of the same squares, another order
  EXPECT_EQ(kernels::sum_squares_multi(g), got) << "run twice";
  EXPECT_EQ(kernels::sum_squares_multi({g[3]}), kernels::sum_squares(g[3]));
  EXPECT_KEEL_ERROR(kernels::sum_squares_multi({g[0], c[0]}), "sum_squares_multi", "tensor 1");
}

struct ConvCase {
  int64_t B, C, T, K;
  bool bias, strided;
  const char* why;
};

const ConvCase kConvCases[] = {
    {2, 5, 33, 4, true, false, "K = 4 with bias"},
    {2, 5, 33, 4, false, true, "strided x (a transposed (B, T, C) tensor)"},
    {1, 3, 3, 4, true, false, "T < K: every output sees the pad"},
    {3, 2, 40, 11, true, true, "K = 11: two passes of taps"},
    {2, 4, 17, 1, true, false, "K = 1"},
};

TEST(CudaConv1d, ForwardAndBackwardMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 3500;
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const ConvCase& cc : kConvCases) {
      const std::string what = std::string(cc.why) + " " + dtype_name(dt);
      Tensor x, xg;
      if (cc.strided) {
        Tensor base = testing::uniform({cc.B, cc.T, cc.C}, ++seed, -1.0, 1.0, dt);
        x = base.transpose(1, 2);
        xg = to_gpu(base).transpose(1, 2);  // (B, C, T) views
      } else {
        x = testing::uniform({cc.B, cc.C, cc.T}, ++seed, -1.0, 1.0, dt);
        xg = to_gpu(x);
      }
      Tensor w = testing::uniform({cc.C, cc.K}, ++seed, -1.0, 1.0, dt);
      Tensor b = cc.bias ? testing::uniform({cc.C}, ++seed, -1.0, 1.0, dt) : Tensor();
      Tensor wg = to_gpu(w), bg = cc.bias ? to_gpu(b) : Tensor();
      poison_device_memory();
      expect_close(kernels::causal_conv1d(xg, wg, bg), kernels::causal_conv1d(x, w, b),
                   tol_for_sums(dt, 1e-6), "forward " + what);

      Tensor dy = testing::uniform({cc.B, cc.C, cc.T}, ++seed, -1.0, 1.0, dt);
      poison_device_memory();
      auto g = kernels::causal_conv1d_backward(x, w, dy, true, true, true);
      auto gg = kernels::causal_conv1d_backward(xg, wg, to_gpu(dy), true, true, true);
      expect_close(gg.dx, g.dx, tol_for_sums(dt, 1e-6), "dx " + what);
      // Sums over (B, T) in f64 on both sides.
      expect_close(gg.dweight, g.dweight, tol_for_sums(dt, 1e-6), "dweight " + what);
      expect_close(gg.dbias, g.dbias, tol_for_sums(dt, 1e-6), "dbias " + what);

      auto only_db = kernels::causal_conv1d_backward(xg, wg, to_gpu(dy), false, false, true);
      EXPECT_FALSE(only_db.dx.defined());
      EXPECT_FALSE(only_db.dweight.defined());
      expect_close(only_db.dbias, g.dbias, tol_for_sums(dt, 1e-6), "dbias alone " + what);
    }
  }
}

TEST(CudaAutograd, Conv1dGradientsMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  auto [x, xg] = cuda_test::leaf_pair({2, 6, 25}, 3600);
  auto [w, wg] = cuda_test::leaf_pair({6, 4}, 3601);
  auto [b, bg] = cuda_test::leaf_pair({6}, 3602);
  auto run = [](const Tensor& in, const Tensor& wt, const Tensor& bs) {
    Tensor y = causal_conv1d(silu(in), wt, bs);  // (2, 6, 25)
    return sum(y * y);
  };
  Tensor loss = run(x, w, b), loss_g = run(xg, wg, bg);
  expect_close(loss_g, loss, Tol{1e-5, 1e-6}, "loss");
  loss.backward();
  loss_g.backward();
  expect_close(xg.grad(), x.grad(), Tol{1e-5, 1e-6}, "grad of x");
  expect_close(wg.grad(), w.grad(), Tol{1e-5, 1e-5}, "grad of weight");
  expect_close(bg.grad(), b.grad(), Tol{1e-5, 1e-5}, "grad of bias");
}

}  // namespace
}  // namespace keel
