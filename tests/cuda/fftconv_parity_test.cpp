// CUDA FFT long convolution (cuFFT plus keel's own pad, product and crop
// kernels) against the CPU path: forward and backward (du, dk, dD) for
// f32, bf16 and f16, L = T and L < T, with and without D, strided inputs,
// repeated runs bit-identical (the dk and dD batch sums run in a fixed
// order), mixed devices refused, and through autograd. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/fftconv.h"
#include "tests/cuda/parity.h"

namespace keel {
namespace {

using cuda_test::expect_close;
using cuda_test::expect_equal;
using cuda_test::poison_device_memory;
using cuda_test::to_gpu;
using cuda_test::Tol;
using cuda_test::tol_for_sums;

struct Case {
  int64_t B, C, T, L;
  bool D, strided;
};

// Both sides round FFTs of n points in f32 in different orders (cuFFT's
// radices vs keel's Stockham radix-4): the difference is absolute, about
// eps_f32 * log2(n) * sqrt(L) on O(1) data, so the floor grows with it; the
// batch sums dk, dD add sqrt(B T).
Tol fft_tol(DType dt, const Case& c, bool sum) {
  const double n = double(kernels::fftconv_size(c.T, c.L));
  double atol = 4e-7 * std::log2(2.0 * n) * (1.0 + std::sqrt(double(c.L)));
  if (sum) atol *= std::sqrt(double(c.B * c.T));
  Tol t = tol_for_sums(dt, atol);
  t.rtol = std::max(t.rtol, 1e-4);
  return t;
}

TEST(CudaFftConv, ForwardAndBackwardMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  const Case cases[] = {{2, 3, 1, 1, true, false},       {2, 5, 17, 17, true, false},
                        {3, 4, 64, 9, false, false},     {2, 7, 100, 100, true, true},
                        {1, 3, 4096, 4096, true, false}, {4, 6, 1000, 1, false, true}};
  uint64_t seed = 5000;
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (const Case& cc : cases) {
      const std::string what = std::string(dtype_name(dt)) + " B=" + std::to_string(cc.B) +
                               " C=" + std::to_string(cc.C) + " T=" + std::to_string(cc.T) +
                               " L=" + std::to_string(cc.L) + (cc.strided ? " strided" : "");
      // Strided: u and dy as transposes of (B, T, C), k of (L, C).
      Tensor u = cc.strided ? testing::uniform({cc.B, cc.T, cc.C}, ++seed, -1, 1, dt)
                            : testing::uniform({cc.B, cc.C, cc.T}, ++seed, -1, 1, dt);
      Tensor k = cc.strided ? testing::uniform({cc.L, cc.C}, ++seed, -1, 1, dt)
                            : testing::uniform({cc.C, cc.L}, ++seed, -1, 1, dt);
      Tensor dy = cc.strided ? testing::uniform({cc.B, cc.T, cc.C}, ++seed, -1, 1, dt)
                             : testing::uniform({cc.B, cc.C, cc.T}, ++seed, -1, 1, dt);
      Tensor D = cc.D ? testing::uniform({cc.C}, ++seed, -1, 1, dt) : Tensor();
      Tensor ug = to_gpu(u), kg = to_gpu(k), dyg = to_gpu(dy), Dg = cc.D ? to_gpu(D) : Tensor();
      if (cc.strided) {
        u = u.transpose(1, 2), ug = ug.transpose(1, 2), dy = dy.transpose(1, 2);
        dyg = dyg.transpose(1, 2), k = k.transpose(0, 1), kg = kg.transpose(0, 1);
      }
      poison_device_memory();
      expect_close(kernels::fftconv(ug, kg, Dg), kernels::fftconv(u, k, D), fft_tol(dt, cc, false),
                   "forward " + what);
      poison_device_memory();
      auto g = kernels::fftconv_backward(u, k, dy, true, true, true, D);
      auto gg = kernels::fftconv_backward(ug, kg, dyg, true, true, true, Dg);
      expect_close(gg.du, g.du, fft_tol(dt, cc, false), "du " + what);
      expect_close(gg.dk, g.dk, fft_tol(dt, cc, true), "dk " + what);
      expect_close(gg.dD, g.dD, fft_tol(dt, cc, true), "dD " + what);
      // The batch sums run in a fixed order: a second run is bit-identical.
      auto again = kernels::fftconv_backward(ug, kg, dyg, false, true, true, Dg);
      EXPECT_FALSE(again.du.defined());
      expect_equal(again.dk, gg.dk, "dk rerun " + what);
      expect_equal(again.dD, gg.dD, "dD rerun " + what);
    }
}

TEST(CudaFftConv, MixedDevicesAreRefused) {
  KEEL_SKIP_WITHOUT_CUDA();
  Tensor u = testing::uniform({1, 2, 8}, 5500), k = testing::uniform({2, 3}, 5501);
  EXPECT_KEEL_ERROR(kernels::fftconv(to_gpu(u), k), "fftconv", "expected tensors on");
  EXPECT_KEEL_ERROR(kernels::fftconv(u, k, to_gpu(testing::uniform({2}, 5502))), "fftconv",
                    "expected tensors on");
  EXPECT_KEEL_ERROR(kernels::fftconv_backward(to_gpu(u), to_gpu(k), u, true, true, true),
                    "fftconv backward", "expected tensors on");
}

TEST(CudaAutograd, FftConvGradientsMatchCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  auto [u, ug] = cuda_test::leaf_pair({2, 6, 50}, 5600);
  auto [k, kg] = cuda_test::leaf_pair({6, 50}, 5601);
  auto [D, Dg] = cuda_test::leaf_pair({6}, 5602);
  auto run = [](const Tensor& in, const Tensor& kt, const Tensor& d) {
    Tensor y = fftconv(in, kt, d);  // (2, 6, 50)
    return sum(y * y);
  };
  Tensor loss = run(u, k, D), loss_g = run(ug, kg, Dg);
  expect_close(loss_g, loss, Tol{1e-4, 1e-4}, "loss");
  loss.backward();
  loss_g.backward();
  // FFT rounding differs on the two sides (see fft_tol): 1e-4.
  expect_close(ug.grad(), u.grad(), Tol{1e-4, 1e-4}, "grad of u");
  expect_close(kg.grad(), k.grad(), Tol{1e-4, 1e-4}, "grad of k");
  expect_close(Dg.grad(), D.grad(), Tol{1e-4, 1e-4}, "grad of D");
}

}  // namespace
}  // namespace keel
