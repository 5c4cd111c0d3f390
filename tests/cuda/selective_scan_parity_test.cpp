// CUDA against CPU: the selective scan's forward (y, last_state, saved chunk
// states) and backward (every gradient, dlast included), with and without
// the optional inputs, N below and above one register bucket, D not a
// multiple of a warp, several chunks with a partial last one; the CUDA
// backward deterministic (two runs equal bit for bit). Skips without a GPU.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/selective_scan.h"
#include "tests/cuda/parity.h"

namespace keel {
namespace {

using cuda_test::expect_close;
using cuda_test::to_gpu;
using cuda_test::tol_for_sums;
using kernels::SelectiveScanArgs;

SelectiveScanArgs make_args(int64_t B, int64_t D, int64_t T, int64_t N, bool all, uint64_t seed) {
  SelectiveScanArgs a;
  a.u = testing::uniform({B, D, T}, seed, -1, 1);
  a.delta = testing::uniform({B, D, T}, seed + 1, all ? -1.0 : 0.05, all ? 1.0 : 0.5);
  a.A = testing::uniform({D, N}, seed + 2, -1.0, -0.05);
  a.B = testing::uniform({B, N, T}, seed + 3, -1, 1);
  a.C = testing::uniform({B, N, T}, seed + 4, -1, 1);
  if (all) {
    a.D = testing::uniform({D}, seed + 5, -1, 1);
    a.z = testing::uniform({B, D, T}, seed + 6, -2, 2);
    a.delta_bias = testing::uniform({D}, seed + 7, -0.5, 0.5);
    a.h0 = testing::uniform({B, D, N}, seed + 8, -1, 1);
    a.delta_softplus = true;
  }
  return a;
}

SelectiveScanArgs on_gpu(const SelectiveScanArgs& a) {
  SelectiveScanArgs g = a;
  for (Tensor* t : {&g.u, &g.delta, &g.A, &g.B, &g.C, &g.D, &g.z, &g.delta_bias, &g.h0})
    if (t->defined()) *t = to_gpu(*t);
  return g;
}

TEST(CudaSelectiveScan, ForwardAndBackwardMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  struct Case {
    int64_t B, D, T, N, chunk;
    bool all;
  };
  for (const Case& c : {Case{2, 37, 300, 16, 128, true}, Case{1, 70, 65, 5, 16, false},
                        Case{2, 33, 40, 40, 7, true}, Case{1, 5, 9, 200, 4, true}}) {
    const std::string what = "B=" + std::to_string(c.B) + " D=" + std::to_string(c.D) +
                             " T=" + std::to_string(c.T) + " N=" + std::to_string(c.N);
    SCOPED_TRACE(what);
    const SelectiveScanArgs a = make_args(c.B, c.D, c.T, c.N, c.all, 9000 + uint64_t(c.N));
    const SelectiveScanArgs ag = on_gpu(a);
    Tensor st, stg;
    const auto out = kernels::selective_scan(a, &st, c.chunk);
    const auto outg = kernels::selective_scan(ag, &stg, c.chunk);
    // A few hundred f32 steps, expf vs a polynomial: 1e-5 relative, 1e-5 absolute.
    const cuda_test::Tol tol = tol_for_sums(DType::F32, 1e-5);
    expect_close(outg.y, out.y, tol, "y " + what);
    expect_close(outg.last_state, out.last_state, tol, "last_state " + what);
    expect_close(stg, st, tol, "chunk states " + what);

    Tensor dy = testing::uniform({c.B, c.D, c.T}, 9100),
           dlast = testing::uniform({c.B, c.D, c.N}, 9101);
    const auto g = kernels::selective_scan_backward(a, dy, dlast, st, c.chunk);
    const auto gg = kernels::selective_scan_backward(ag, to_gpu(dy), to_gpu(dlast), stg, c.chunk);
    // Gradients summed over T (dA, dD, ddelta_bias) or D (dB, dC): 1e-4 absolute.
    const cuda_test::Tol sums = tol_for_sums(DType::F32, 1e-4);
    const char* names[] = {"du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "dh0"};
    const Tensor* cpu[] = {&g.du, &g.ddelta, &g.dA,          &g.dB, &g.dC,
                           &g.dD, &g.dz,     &g.ddelta_bias, &g.dh0};
    const Tensor* gpu[] = {&gg.du, &gg.ddelta, &gg.dA,          &gg.dB, &gg.dC,
                           &gg.dD, &gg.dz,     &gg.ddelta_bias, &gg.dh0};
    for (int i = 0; i < 9; ++i) {
      EXPECT_EQ(cpu[i]->defined(), gpu[i]->defined()) << names[i];
      if (cpu[i]->defined())
        expect_close(*gpu[i], *cpu[i], sums, std::string(names[i]) + " " + what);
    }
    // No atomics: a second run gives the same bits.
    const auto gg2 = kernels::selective_scan_backward(ag, to_gpu(dy), to_gpu(dlast), stg, c.chunk);
    EXPECT_EQ(testing::to_doubles(gg2.dB), testing::to_doubles(gg.dB)) << what;
    EXPECT_EQ(testing::to_doubles(gg2.dA), testing::to_doubles(gg.dA)) << what;
  }
}

TEST(CudaSelectiveScan, AutogradMatchesCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  SelectiveScanArgs a = make_args(1, 40, 150, 16, true, 9200);
  for (Tensor* t : {&a.u, &a.delta, &a.A, &a.B, &a.C, &a.D, &a.z, &a.delta_bias, &a.h0})
    t->set_requires_grad(true);
  SelectiveScanArgs ag = on_gpu(a);
  for (Tensor* t : {&ag.u, &ag.delta, &ag.A, &ag.B, &ag.C, &ag.D, &ag.z, &ag.delta_bias, &ag.h0})
    *t = t->detach(), t->set_requires_grad(true);
  auto [y, last] = keel::selective_scan(a);
  auto [yg, lastg] = keel::selective_scan(ag);
  Tensor w = testing::uniform({1, 40, 150}, 9201), wl = testing::uniform({1, 40, 16}, 9202);
  (sum(mul(y, w)) + sum(mul(last, wl))).backward();
  (sum(mul(yg, to_gpu(w))) + sum(mul(lastg, to_gpu(wl)))).backward();
  const cuda_test::Tol sums = tol_for_sums(DType::F32, 1e-4);
  expect_close(yg, y, sums, "y");
  const Tensor* cpu[] = {&a.u, &a.delta, &a.A, &a.B, &a.C, &a.D, &a.z, &a.delta_bias, &a.h0};
  const Tensor* gpu[] = {&ag.u, &ag.delta, &ag.A,          &ag.B, &ag.C,
                         &ag.D, &ag.z,     &ag.delta_bias, &ag.h0};
  for (int i = 0; i < 9; ++i)
    expect_close(gpu[i]->grad(), cpu[i]->grad(), sums, "grad " + std::to_string(i));
}

}  // namespace
}  // namespace keel
