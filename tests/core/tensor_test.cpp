// Tensor handles, views, copies, factories and dtype conversion.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>

#include "core/tensor.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::Doubles;
using testing::to_doubles;

Tensor iota(const Shape& s) { return arange(0, double(shape_numel(s)), 1, DType::F32).view(s); }

TEST(Tensor, FactoriesAndShapes) {
  Tensor z = zeros({2, 3});
  EXPECT_EQ(z.sizes(), (Shape{2, 3}));
  EXPECT_EQ(z.strides(), (Shape{3, 1}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_TRUE(z.is_contiguous());
  for (double v : to_doubles(z)) EXPECT_EQ(v, 0.0);
  for (double v : to_doubles(full({4}, 2.5))) EXPECT_EQ(v, 2.5);
  EXPECT_EQ(to_doubles(arange(1, 7, 2, DType::I64)), (Doubles{1, 3, 5}));
  Tensor v = from_vector<float>({1, 2, 3, 4}, {2, 2});
  EXPECT_EQ(to_doubles(v), (Doubles{1, 2, 3, 4}));
  EXPECT_EQ(from_vector<float>({7}, {1}).item(), 7.0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(empty({3}).raw_data()) % kCpuAlignment, 0u);
}

TEST(Allocator, LargeHostBlocksAreReusedAndSmallOnesAligned) {
  void* first = nullptr;
  {
    Tensor big = empty({1 << 20});  // 4 MiB: cached when freed
    first = big.raw_data();
  }
  Tensor again = empty({1 << 20});
  EXPECT_EQ(again.raw_data(), first);
  Tensor other = empty({(1 << 20) + 4096});  // another size: a new block
  EXPECT_NE(other.raw_data(), first);
  for (int64_t n : {1, 3, 17, 1000, 300000}) {
    Tensor t = empty({n});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % kCpuAlignment, 0u) << n;
  }
}

TEST(Tensor, TransposeIsAViewAndContiguousCopies) {
  Tensor x = iota({2, 3});
  Tensor t = x.transpose(0, 1);
  EXPECT_EQ(t.sizes(), (Shape{3, 2}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.storage(), x.storage());
  EXPECT_EQ(to_doubles(t), (Doubles{0, 3, 1, 4, 2, 5}));
  Tensor c = t.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), x.storage());
  EXPECT_EQ(to_doubles(c), (Doubles{0, 3, 1, 4, 2, 5}));
  EXPECT_TRUE(x.contiguous().same(x));
}

TEST(Tensor, ViewReshapeSplitAndMerge) {
  Tensor x = iota({2, 3, 4});
  Tensor v = x.view({6, 4});
  EXPECT_EQ(v.storage(), x.storage());
  EXPECT_EQ(x.view({2, -1}).sizes(), (Shape{2, 12}));
  EXPECT_EQ(x.view({2, 3, 2, 2}).strides(), (Shape{12, 4, 2, 1}));
  // A transposed tensor cannot merge the swapped dims without a copy...
  Tensor t = x.transpose(1, 2);  // (2, 4, 3)
  EXPECT_KEEL_ERROR(t.view({2, 12}), "view", "(2, 12)");
  // ...but reshape copies, with the right order.
  Tensor r = t.reshape({2, 12});
  EXPECT_EQ(to_doubles(r), to_doubles(t));
  // Splitting the leading dim of a transposed view is still a view.
  Tensor s = t.view({2, 2, 2, 3});
  EXPECT_EQ(s.storage(), x.storage());
  EXPECT_EQ(to_doubles(s), to_doubles(t));
  EXPECT_KEEL_ERROR(x.view({5, 5}), "reshape", "(2, 3, 4)", "(5, 5)");
}

TEST(Tensor, NarrowSelectExpandPermute) {
  Tensor x = iota({3, 4});
  EXPECT_EQ(to_doubles(x.narrow(1, 1, 2)), (Doubles{1, 2, 5, 6, 9, 10}));
  EXPECT_EQ(to_doubles(x.select(0, 2)), (Doubles{8, 9, 10, 11}));
  Tensor row = iota({1, 3});
  Tensor e = row.expand({2, 3});
  EXPECT_EQ(e.strides()[0], 0);
  EXPECT_EQ(to_doubles(e), (Doubles{0, 1, 2, 0, 1, 2}));
  Tensor y = iota({2, 3, 4}).permute({2, 0, 1});
  EXPECT_EQ(y.sizes(), (Shape{4, 2, 3}));
  EXPECT_EQ(to_doubles(y.select(0, 1)), (Doubles{1, 5, 9, 13, 17, 21}));
  EXPECT_EQ(x.unsqueeze(0).sizes(), (Shape{1, 3, 4}));
  EXPECT_EQ(x.unsqueeze(2).squeeze(2).sizes(), (Shape{3, 4}));
  EXPECT_KEEL_ERROR(x.narrow(1, 3, 2), "narrow", "(3, 4)");
  EXPECT_KEEL_ERROR(x.expand({2, 4}), "expand", "(2, 4)");
  EXPECT_KEEL_ERROR(x.permute({0, 0}), "permute");
  EXPECT_KEEL_ERROR(x.transpose(0, 2), "out of range");
}

TEST(Tensor, CopyBroadcastsAndConverts) {
  Tensor dst = zeros({2, 3});
  dst.copy_(from_vector<float>({1, 2, 3}, {3}));
  EXPECT_EQ(to_doubles(dst), (Doubles{1, 2, 3, 1, 2, 3}));
  Tensor ints = from_vector<int64_t>({-3, 0, 5}, {3});
  EXPECT_EQ(to_doubles(ints.to(DType::F32)), (Doubles{-3, 0, 5}));
  EXPECT_EQ(to_doubles(from_vector<float>({1.7f, -2.2f}, {2}).to(DType::I32)),
            (Doubles{1, -2}));
  // Writing into a strided view touches only its elements.
  Tensor x = zeros({2, 4});
  x.narrow(1, 1, 2).fill_(9);
  EXPECT_EQ(to_doubles(x), (Doubles{0, 9, 9, 0, 0, 9, 9, 0}));
  EXPECT_KEEL_ERROR(dst.copy_(zeros({4})), "copy_", "(4,)", "(2, 3)");
}

TEST(DType, Bf16AndF16RoundTrip) {
  // Exactly representable values survive; others round to nearest even.
  for (float v : {0.0f, 1.0f, -2.5f, 0.15625f, 65504.0f}) {
    EXPECT_EQ(f16_to_float(float_to_f16(v)), v);
    EXPECT_EQ(bf16_to_float(float_to_bf16(v)), v == 65504.0f ? 65536.0f : v);
  }
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 1.0f / 256)), 1.0f);  // tie -> even
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3.0f / 256)), 1.0f + 1.0f / 64);
  EXPECT_TRUE(std::isinf(f16_to_float(float_to_f16(1e6f))));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_EQ(f16_to_float(float_to_f16(5.960464477539063e-08f)), 5.960464477539063e-08f);
  // Every f16 bit pattern that is not NaN round-trips through f32.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    f16 h{uint16_t(b)};
    float f = f16_to_float(h);
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_f16(f).bits, h.bits) << b;
  }
  Tensor x = from_vector<float>({1.0f, 3.140625f, -0.5f}, {3});
  EXPECT_EQ(to_doubles(x.to(DType::BF16).to(DType::F32)), (Doubles{1.0, 3.140625, -0.5}));
  EXPECT_EQ(to_doubles(x.to(DType::F16)), (Doubles{1.0, 3.140625, -0.5}));
  EXPECT_EQ(dtype_from_name("bf16"), DType::BF16);
  EXPECT_KEEL_ERROR(dtype_from_name("f64"), "f64");
}

TEST(Random, PhiloxKnownAnswer) {
  // Known-answer vectors of the Random123 reference for Philox4x32-10.
  Philox4 z = philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(z.v[0], 0x6627e8d5u);
  EXPECT_EQ(z.v[1], 0xe169c58du);
  EXPECT_EQ(z.v[2], 0xbc57ac4cu);
  EXPECT_EQ(z.v[3], 0x9b00dbd8u);
  Philox4 f = philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  EXPECT_EQ(f.v[0], 0x408f276du);
  EXPECT_EQ(f.v[1], 0x41c83b0eu);
  EXPECT_EQ(f.v[2], 0xa20bc7c6u);
  EXPECT_EQ(f.v[3], 0x6d5451fdu);
}

TEST(Random, DrawsDependOnlyOnSeedAndOffset) {
  Generator a(42), b(42);
  Tensor x = randn({1000}, a);
  Tensor y = randn({1000}, b);
  EXPECT_EQ(to_doubles(x), to_doubles(y));
  EXPECT_EQ(a.offset(), 1u);
  Tensor x2 = randn({1000}, a);  // next offset: different numbers
  EXPECT_NE(to_doubles(x2), to_doubles(x));
  // A prefix of a larger draw equals the smaller draw (element i is f(seed, offset, i)).
  Generator c(42);
  Tensor big = randn({5000}, c);
  Doubles bd = to_doubles(big);
  Doubles xd = to_doubles(x);
  for (size_t i = 0; i < xd.size(); ++i) ASSERT_EQ(bd[i], xd[i]);
  // The numbers do not depend on the thread count.
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  Generator d(42);
  Doubles single = to_doubles(randn({5000}, d));
  omp_set_num_threads(saved);
  EXPECT_EQ(single, bd);
  // Moments of 5000 normals.
  double m = 0, v = 0;
  for (double t : bd) m += t;
  m /= double(bd.size());
  for (double t : bd) v += (t - m) * (t - m);
  v /= double(bd.size());
  EXPECT_NEAR(m, 0.0, 0.06);
  EXPECT_NEAR(v, 1.0, 0.08);
  Generator u(7);
  for (double t : to_doubles(rand_uniform({2000}, -2, 3, u))) {
    ASSERT_GE(t, -2.0);
    ASSERT_LT(t, 3.0);
  }
}

TEST(Device, CpuAlwaysAndCudaWhenBuilt) {
  EXPECT_EQ(Device::cpu().str(), "cpu");
  EXPECT_EQ(Device::cuda(1).str(), "cuda:1");
  if (!cuda_available()) {
    EXPECT_KEEL_ERROR(zeros({2}, DType::F32, Device::cuda(0)), "cuda:0");
    GTEST_SKIP() << "no CUDA device";
  }
  Tensor x = from_vector<float>({1, 2, 3, 4}, {2, 2});
  Tensor g = x.to(Device::cuda(0));
  EXPECT_TRUE(g.device().is_cuda());
  EXPECT_EQ(to_doubles(g.to(Device::cpu())), to_doubles(x));
  EXPECT_EQ(to_doubles(g.transpose(0, 1).to(Device::cpu())), (Doubles{1, 3, 2, 4}));
}

TEST(Errors, MessagesNameWhatAndWhere) {
  try {
    zeros({2, 3}).view({4});
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("(2, 3)"), std::string::npos) << m;
    EXPECT_NE(m.find("tensor.cpp"), std::string::npos) << m;
  }
  EXPECT_THROW(KEEL_ASSERT(1 == 2, "bug"), InternalError);
  EXPECT_KEEL_ERROR(Tensor().sizes(), "undefined");
}

}  // namespace
}  // namespace keel
