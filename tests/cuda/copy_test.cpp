// core's data movement on CUDA tensors against the CPU, bit for bit:
// host<->device and device<->device copies of strided, broadcast and
// misaligned views, every dtype conversion (with NaN, infinities, rounding
// ties and f16 subnormals), fill, arange, and Philox randn / rand_uniform
// drawn on the device. Outputs the kernels allocate start poisoned.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "tests/cuda/parity.h"

namespace keel {
namespace {

using cuda_test::gpu;
using cuda_test::kInf;
using cuda_test::kNaN;
using cuda_test::poison_device_memory;
using testing::Doubles;
using testing::to_doubles;

const DType kAllTypes[] = {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8};
const DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16};

std::vector<uint8_t> host_bytes(const Tensor& t) {
  Tensor h = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const uint8_t*>(h.raw_data());
  return std::vector<uint8_t>(p, p + size_t(h.numel()) * h.element_size());
}

// Same shape, dtype and bytes (so NaN payloads and -0 count too).
void expect_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  const std::vector<uint8_t> g = host_bytes(got), w = host_bytes(want);
  if (g == w) return;
  const size_t es = got.element_size();
  size_t first = 0;
  while (first < g.size() && g[first] == w[first]) ++first;
  const int64_t i = int64_t(first / es);
  ADD_FAILURE() << what << ": element " << i << " (row-major) is "
                << to_doubles(got.contiguous().view({-1}).narrow(0, i, 1))[0] << ", the CPU has "
                << to_doubles(want.contiguous().view({-1}).narrow(0, i, 1))[0];
}

std::string name(const char* what, DType a, DType b) {
  return std::string(what) + " " + dtype_name(a) + " -> " + dtype_name(b);
}

// Host values of `dtype` for converting into `to`: random in a range every
// type holds, plus (when both are floating) NaN, infinities, signed zeros,
// bf16 and f16 rounding ties, f16 subnormals and f16 overflow.
Tensor source_values(DType dtype, DType to, int64_t n, uint64_t seed) {
  const bool to_int = !is_floating(to);
  const bool unsigned_only = dtype == DType::U8 || to == DType::U8;
  const double lo = unsigned_only ? 0.0 : -100.0, hi = unsigned_only ? 200.0 : 100.0;
  Doubles v = to_doubles(testing::uniform({n}, seed, lo, hi));
  if (!is_floating(dtype))
    for (double& x : v) x = std::trunc(x);
  std::vector<float> f(v.begin(), v.end());
  if (is_floating(dtype) && !to_int) {
    const float specials[] = {float(kNaN),    float(kInf), -float(kInf), 0.0f,     -0.0f,
                              1.00390625f,     // 1 + 2^-8: a bf16 tie (rounds to even)
                              1.01171875f,     // 1 + 3 * 2^-8: a tie rounding up
                              1.00048828125f,  // 1 + 2^-11: an f16 tie
                              3.0e-6f,        -6.0e-8f,    65504.0f,     65520.0f, 1.0e-40f};
    for (size_t i = 0; i < std::size(specials) && i * 3 < f.size(); ++i) f[i * 3] = specials[i];
  }
  Tensor t = from_vector<float>(f, {n});
  return t.to(dtype);
}

TEST(CudaCopy, HostDeviceRoundTripEveryDtype) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kAllTypes) {
    Tensor x = source_values(dt, dt, 4099, 3);
    poison_device_memory();
    Tensor d = x.to(gpu());
    EXPECT_TRUE(d.device().is_cuda());
    expect_same_bits(d.to(Device::cpu()), x, name("round trip", dt, dt));
    expect_same_bits(d.clone(), x, name("device clone", dt, dt));
  }
}

TEST(CudaCopy, EveryConversionMatchesTheCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 10;
  for (DType from : kAllTypes) {
    for (DType to : kAllTypes) {
      Tensor x = source_values(from, to, 1027, ++seed);  // odd: vector tails
      Tensor want = x.to(to);
      Tensor xd = x.to(gpu());
      poison_device_memory();
      expect_same_bits(xd.to(to), want, name("dense on device", from, to));

      // Strided: a transposed view converts through the strided kernel.
      Tensor x2 = x.narrow(0, 0, 1026).view({27, 38});
      Tensor xd2 = x2.to(gpu());
      expect_same_bits(xd2.transpose(0, 1).to(to), x2.transpose(0, 1).to(to),
                       name("strided on device", from, to));

      // Converting while crossing: host -> device and device -> host.
      Tensor into_dev = full({27, 38}, 0.0, to, gpu());
      into_dev.copy_(x2.transpose(0, 1).transpose(0, 1));
      expect_same_bits(into_dev, x2.to(to), name("host to device", from, to));
      Tensor into_host = empty({38, 27}, to);
      into_host.copy_(xd2.transpose(0, 1));
      expect_same_bits(into_host, x2.transpose(0, 1).to(to), name("device to host", from, to));
    }
  }
}

TEST(CudaCopy, StridedViewsOfEveryElementSize) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kAllTypes) {
    Tensor x = source_values(dt, dt, 2 * 3 * 4 * 5 * 6 * 7, 21).view({2, 3, 4, 5, 6, 7});
    Tensor d = x.to(gpu());
    const std::vector<int64_t> perm = {5, 0, 3, 1, 4, 2};
    poison_device_memory();
    // Six dims that no longer merge: the general index path.
    expect_same_bits(d.permute(perm).contiguous(), x.permute(perm).contiguous(),
                     name("permute", dt, dt));
    // A narrowed, transposed view to the host (gathered on the device first)...
    Tensor v = d.narrow(2, 1, 2).transpose(1, 4);
    expect_same_bits(v.to(Device::cpu()), x.narrow(2, 1, 2).transpose(1, 4).contiguous(),
                     name("strided device to host", dt, dt));
    // ...and a strided host view to the device.
    Tensor hv = x.narrow(5, 2, 3).transpose(0, 3);
    expect_same_bits(hv.to(gpu()), hv.contiguous(), name("strided host to device", dt, dt));
    // Into a strided device destination.
    Tensor dst = full({7, 6, 5, 4, 3, 2}, 0.0, dt, gpu());
    Tensor dst_cpu = full({7, 6, 5, 4, 3, 2}, 0.0, dt);
    Tensor src_d = d.narrow(0, 0, 1), src_h = x.narrow(0, 0, 1);
    const std::vector<int64_t> rev = {5, 4, 3, 2, 1, 0};
    dst.permute(rev).narrow(0, 1, 1).copy_(src_d);
    dst_cpu.permute(rev).narrow(0, 1, 1).copy_(src_h);
    expect_same_bits(dst, dst_cpu, name("into a strided destination", dt, dt));
  }
}

TEST(CudaCopy, Broadcasts) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kAllTypes) {
    Tensor s = source_values(dt, dt, 15, 31).view({3, 1, 5});
    Tensor sd = s.to(gpu());
    poison_device_memory();
    const Shape big = {4, 3, 7, 5};
    expect_same_bits(sd.expand(big).contiguous(), s.expand(big).contiguous(),
                     name("expand().contiguous()", dt, dt));
    Tensor dst = empty(big, dt, gpu());
    dst.copy_(s);  // host source broadcast into a device tensor
    expect_same_bits(dst, s.expand(big).contiguous(), name("host broadcast source", dt, dt));
    Tensor dst2 = empty(big, dt, gpu());
    dst2.copy_(s.expand({3, 7, 5}));  // a stride-0 host view: only its 15 elements move
    expect_same_bits(dst2, s.expand(big).contiguous(), name("host expand source", dt, dt));
    Tensor host = empty(big, dt);
    host.copy_(sd.expand({3, 7, 5}));  // device broadcast into a host tensor
    expect_same_bits(host, s.expand(big).contiguous(), name("device broadcast to host", dt, dt));
    Tensor conv = empty(big, DType::F32, gpu());
    conv.copy_(sd);  // broadcasting and converting on the device
    expect_same_bits(conv, s.to(DType::F32).expand(big).contiguous(),
                     name("broadcast and convert", dt, DType::F32));
  }
  Tensor d = empty({2, 3}, DType::F32, gpu());
  EXPECT_KEEL_ERROR(d.copy_(zeros({4}, DType::F32, gpu())), "copy_");
}

TEST(CudaCopy, MisalignedDenseCopies) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::U8, DType::I64}) {
    for (int64_t n : {int64_t(1), int64_t(15), int64_t(16), int64_t(1000), int64_t(100003)}) {
      Tensor x = source_values(dt, dt, n + 9, 41);
      Tensor xd = x.to(gpu());
      for (int64_t so : {0, 1, 3}) {
        for (int64_t doff : {0, 1, 4}) {
          // Poisoned around the copy, which must not touch the borders.
          Tensor base = full({n + 9}, dt == DType::F32 ? kNaN : 77.0, dt, gpu());
          Tensor base_cpu = full({n + 9}, dt == DType::F32 ? kNaN : 77.0, dt);
          base.narrow(0, doff, n).copy_(xd.narrow(0, so, n));
          base_cpu.narrow(0, doff, n).copy_(x.narrow(0, so, n));
          expect_same_bits(base, base_cpu,
                           name("misaligned", dt, dt) + " n " + std::to_string(n) + " src+" +
                               std::to_string(so) + " dst+" + std::to_string(doff));
        }
      }
    }
  }
}

TEST(CudaFill, EveryDtypeDenseStridedAndMisaligned) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kAllTypes) {
    for (double value : {0.0, 2.5, -7.75, 100.0}) {
      if (dt == DType::U8 && value < 0) continue;  // not representable: undefined in C++
      for (int64_t n : {int64_t(1), int64_t(7), int64_t(33), int64_t(4099)}) {
        Tensor g = full({n + 5, 3}, 9.0, dt, gpu());
        Tensor c = full({n + 5, 3}, 9.0, dt);
        g.narrow(0, 1, n).fill_(value);  // dense, 3 elements in: a head before alignment
        c.narrow(0, 1, n).fill_(value);
        g.narrow(1, 2, 1).fill_(value + 1);  // a column: the strided kernel
        c.narrow(1, 2, 1).fill_(value + 1);
        expect_same_bits(g, c,
                         std::string("fill ") + dtype_name(dt) + " " + std::to_string(value) +
                             " n " + std::to_string(n));
      }
    }
    poison_device_memory();
    expect_same_bits(zeros({1000}, dt, gpu()), zeros({1000}, dt),
                     std::string("zeros ") + dtype_name(dt));
    expect_same_bits(ones({3, 333}, dt, gpu()), ones({3, 333}, dt),
                     std::string("ones ") + dtype_name(dt));
    expect_same_bits(full({17}, 1.0 / 3.0, dt, gpu()), full({17}, 1.0 / 3.0, dt),
                     std::string("full ") + dtype_name(dt));
  }
  Tensor nan_fill = full({9}, kNaN, DType::BF16, gpu());
  expect_same_bits(nan_fill, full({9}, kNaN, DType::BF16), "NaN fill");
  EXPECT_EQ(full({1}, 4.5, DType::F32, gpu()).item(), 4.5);
  EXPECT_EQ(arange(0, 5, 1, DType::I32, gpu()).to_vector<int32_t>(),
            (std::vector<int32_t>{0, 1, 2, 3, 4}));
}

TEST(CudaFactories, ArangeMatchesTheCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  struct Case {
    double start, end, step;
    DType dt;
  };
  const Case cases[] = {{0, 1000, 1, DType::I64},      {-5, 5, 0.25, DType::F32},
                        {1, 2, 0.001, DType::BF16},    {10, -10, -0.7, DType::F16},
                        {0, 1e6, 1, DType::I32},       {0, 256, 1, DType::U8},
                        {0.1, 77.3, 0.37, DType::F32}, {3, 3, 1, DType::F32}};
  for (const Case& c : cases) {
    poison_device_memory();
    expect_same_bits(
        arange(c.start, c.end, c.step, c.dt, gpu()), arange(c.start, c.end, c.step, c.dt),
        std::string("arange ") + std::to_string(c.start) + ".." + std::to_string(c.end) + " step " +
            std::to_string(c.step) + " " + dtype_name(c.dt));
  }
}

TEST(CudaFactories, RandomDrawsAreTheCpusBitForBit) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : kFloatTypes) {
    for (int64_t n :
         {int64_t(1), int64_t(2), int64_t(3), int64_t(5), int64_t(4099), int64_t((1 << 20) + 3)}) {
      for (uint64_t seed : {uint64_t(0), uint64_t(1234567), (uint64_t(1) << 40) + 9}) {
        Generator gc(seed), gg(seed);
        gc.set_state(seed, 5);
        gg.set_state(seed, 5);
        poison_device_memory();
        const std::string what = std::string(dtype_name(dt)) + " n " + std::to_string(n) +
                                 " seed " + std::to_string(seed);
        for (int draw = 0; draw < 2; ++draw) {  // the offset advances the same way
          expect_same_bits(randn({n}, gg, dt, gpu()), randn({n}, gc, dt), "randn " + what);
          expect_same_bits(rand_uniform({n}, -2.0, 3.0, gg, dt, gpu()),
                           rand_uniform({n}, -2.0, 3.0, gc, dt), "rand_uniform " + what);
        }
        EXPECT_EQ(gg.offset(), gc.offset());
      }
    }
  }
  manual_seed(5);
  Tensor c = randn({7, 9});
  manual_seed(5);
  expect_same_bits(randn({7, 9}, DType::F32, gpu()), c, "default generator");
  Generator g(1);
  EXPECT_KEEL_ERROR(randn({3}, g, DType::I32, gpu()), "floating");
}

}  // namespace
}  // namespace keel
