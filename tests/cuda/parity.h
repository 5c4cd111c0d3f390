// Helpers for the CUDA parity tests: every CUDA kernel is run on the same
// inputs as its CPU oracle and the results compared with per-dtype
// tolerances (NaN never passes unless the CPU also gives NaN there). Every
// test skips when no CUDA device is present, so the binary builds and passes
// on a machine without one.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tests/testing/gradcheck.h"

namespace keel::cuda_test {

#define KEEL_SKIP_WITHOUT_CUDA()                                             \
  do {                                                                       \
    if (!::keel::cuda_available()) GTEST_SKIP() << "no CUDA device present"; \
  } while (0)

inline Device gpu() { return Device::cuda(0); }
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// A dense copy of t on the GPU (views are rebuilt on the copy of their base).
inline Tensor to_gpu(const Tensor& t) { return t.to(gpu()); }

struct Tol {
  double rtol, atol;
};

// Per-dtype tolerances, GPU result against the CPU oracle on identical inputs.
//   f32:  both sides compute in f32; summation order and the math library
//         (CUDA's expf/erff/tanhf vs glibc, each within 2 ulp) differ, so a
//         few ulp: 1e-5 relative; 1e-6 absolute for results that come out
//         of cancellation near zero (e.g. gelu(-4) = x * (1 + erf) ~ 1e-4).
//   bf16: 8 significant bits; f32 values a few ulp apart can round to
//         neighbouring bf16 values, one step being up to 2^-7 relative: 1e-2.
//   f16:  11 significant bits, one step up to 2^-10 relative: 1e-3.
inline Tol tol_for(DType dt) {
  switch (dt) {
    case DType::BF16:
      return {1e-2, 1e-3};
    case DType::F16:
      return {1e-3, 1e-4};
    default:
      return {1e-5, 1e-6};
  }
}

// As tol_for, with the absolute floor scaled for results that are sums of
// many O(1) terms with cancellation (parameter gradients summed over rows),
// whose f32 rounding error grows with the number of terms.
inline Tol tol_for_sums(DType dt, double atol) {
  Tol t = tol_for(dt);
  t.atol = std::max(t.atol, atol);
  return t;
}

// The GPU result against the CPU's: same shape and dtype, values close.
inline void expect_close(const Tensor& got, const Tensor& want, Tol tol, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what << ": GPU result undefined";
  ASSERT_TRUE(want.defined()) << what << ": CPU result undefined";
  EXPECT_TRUE(got.device().is_cuda()) << what << ": result on " << got.device().str();
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_EQ(got.dtype(), want.dtype()) << what;
  testing::Doubles g = testing::to_doubles(got), w = testing::to_doubles(want);
  // Equal values pass as they are: all_close would see inf - inf = NaN for a
  // masked log-softmax entry that is -inf on both sides. NaN is never equal,
  // so it still only passes where the CPU has NaN too.
  for (size_t i = 0; i < g.size() && i < w.size(); ++i)
    if (g[i] == w[i]) g[i] = w[i] = 0.0;
  EXPECT_TRUE(testing::all_close(g, w, tol.rtol, tol.atol)) << what;
}

// Bit-for-bit: copies, gathers, masks, index results.
inline void expect_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  expect_close(got, want, Tol{0.0, 0.0}, what);
}

// Leaves NaN in device memory that the allocator will hand out again, so
// an output a kernel allocates starts poisoned and an element it forgets to
// write fails the comparison. Best effort: it relies on the caching
// allocator reusing freed blocks; where an API takes its output (in-place
// ops), the tests poison that output themselves.
inline void poison_device_memory() {
  std::vector<Tensor> blocks;
  for (int64_t n : {64, 1024, 16384, 262144})
    for (int k = 0; k < 3; ++k) blocks.push_back(full({n}, kNaN, DType::F32, gpu()));
}

// A leaf on the CPU and an identical leaf on the GPU.
struct LeafPair {
  Tensor cpu, gpu;
};
inline LeafPair leaf_pair(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0,
                          DType dtype = DType::F32) {
  Tensor c = testing::uniform(shape, seed, lo, hi, dtype);
  Tensor g = to_gpu(c);
  c.set_requires_grad(true);
  g.set_requires_grad(true);
  return {c, g};
}

inline const char* dtype_str(DType dt) { return dtype_name(dt); }

}  // namespace keel::cuda_test
