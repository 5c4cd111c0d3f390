// keel's CUDA runtime on a device: the caching allocator (reuse on one
// stream, statistics, the out-of-memory message, empty_cache, blocks used on
// a second stream), pinned host memory and asynchronous copies, streams and
// events. Every device test skips without a GPU; in a build without CUDA the
// tests check that device requests fail with a clear message instead.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/tensor.h"
#include "tests/cuda/parity.h"

#ifdef KEEL_WITH_CUDA
#include "core/cuda/allocator.h"
#include "core/cuda/check.h"
#include "core/cuda/stream.h"
#endif

namespace keel {
namespace {

using cuda_test::gpu;
using testing::Doubles;
using testing::to_doubles;

#ifdef KEEL_WITH_CUDA

// 37 MiB: a large block no other test leaves lying around, so which cached
// block the allocator picks is predictable.
constexpr int64_t kBigFloats = (int64_t(37) << 20) / 4;

// Blocks a stream until released: a host function that spins on a flag.
// Destroying the gate releases it, so a failed assertion cannot leave the
// stream (and the Stream destructor that waits for it) stuck.
class StreamGate {
 public:
  explicit StreamGate(cudaStream_t s) {
    KEEL_CUDA_CHECK(cudaLaunchHostFunc(s, &StreamGate::spin, &open_));
  }
  ~StreamGate() { open(); }
  void open() { open_.store(true); }

 private:
  static void spin(void* flag) {
    auto* f = static_cast<std::atomic<bool>*>(flag);
    while (!f->load()) std::this_thread::yield();
  }
  std::atomic<bool> open_{false};
};

TEST(CudaAllocator, FreedBlockIsReusedOnItsStream) {
  KEEL_SKIP_WITHOUT_CUDA();
  cuda::empty_cache(0);
  void* first = nullptr;
  {
    Tensor t = empty({kBigFloats}, DType::F32, gpu());
    first = t.raw_data();
  }
  const cuda::MemoryStats before = cuda::memory_stats(0);
  for (int i = 0; i < 20; ++i) {  // steady state: no cudaMalloc, no cudaFree
    Tensor t = empty({kBigFloats}, DType::F32, gpu());
    EXPECT_EQ(t.raw_data(), first);
  }
  const cuda::MemoryStats after = cuda::memory_stats(0);
  EXPECT_EQ(after.segment_allocs, before.segment_allocs);
  EXPECT_EQ(after.segment_frees, before.segment_frees);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 20);

  // Another stream does not get the block: work queued on the first stream
  // may still be using it.
  cuda::Stream side(0);
  cuda::StreamGuard guard(0, side.get());
  Tensor other = empty({kBigFloats}, DType::F32, gpu());
  EXPECT_NE(other.raw_data(), first);
}

TEST(CudaAllocator, StatisticsFollowAllocations) {
  KEEL_SKIP_WITHOUT_CUDA();
  const cuda::MemoryStats s0 = cuda::memory_stats(0);
  {
    Tensor a = empty({1 << 20}, DType::F32, gpu());  // 4 MiB: a multiple of 512 and of 2 MiB
    const cuda::MemoryStats s1 = cuda::memory_stats(0);
    EXPECT_EQ(s1.allocated, s0.allocated + (size_t(4) << 20));
    EXPECT_EQ(s1.requested, s0.requested + (size_t(4) << 20));
    EXPECT_GE(s1.peak_allocated, s1.allocated);
    EXPECT_GE(s1.reserved, s1.allocated);
    Tensor b = empty({3}, DType::F32, gpu());  // 12 bytes: one 512-byte block
    EXPECT_EQ(cuda::memory_stats(0).allocated, s1.allocated + 512);
  }
  const cuda::MemoryStats s2 = cuda::memory_stats(0);
  EXPECT_EQ(s2.allocated, s0.allocated);
  EXPECT_GE(s2.cached(), size_t(4) << 20);
  cuda::reset_peak_memory_stats(0);
  EXPECT_EQ(cuda::memory_stats(0).peak_allocated, s2.allocated);

  const size_t released = cuda::empty_cache(0);
  EXPECT_GE(released, size_t(4) << 20);
  EXPECT_EQ(cuda::memory_stats(0).reserved, s2.reserved - released);
}

TEST(CudaAllocator, OutOfMemoryNamesTheRequestWhatKeelHoldsAndWhatIsFree) {
  KEEL_SKIP_WITHOUT_CUDA();
  Tensor held = empty({1 << 20}, DType::F32, gpu());
  EXPECT_KEEL_ERROR(empty({int64_t(1) << 48}, DType::F32, gpu()), "CUDA out of memory on cuda:0",
                    "tried to allocate 1.00 PiB (1125899906842624 bytes)", "in use", "cached",
                    "the device has", "free of");
  EXPECT_GE(cuda::memory_stats(0).oom_retries, 1u);
  // The failed cudaMalloc left no error behind for the next launch to report.
  Tensor t = full({5}, 3.0, DType::F32, gpu());
  EXPECT_EQ(to_doubles(t), (Doubles{3, 3, 3, 3, 3}));
  KEEL_CUDA_CHECK(cudaGetLastError());
}

TEST(CudaAllocator, BlockUsedOnAnotherStreamWaitsForIt) {
  KEEL_SKIP_WITHOUT_CUDA();
  cuda::empty_cache(0);
  const size_t bytes = size_t(kBigFloats) * 4;
  Tensor a1 = empty({kBigFloats}, DType::F32, gpu());
  Tensor a2 = empty({kBigFloats}, DType::F32, gpu());
  void* p1 = a1.raw_data();
  void* p2 = a2.raw_data();
  a2 = Tensor();  // cached
  Tensor t = empty({kBigFloats}, DType::F32, gpu());
  ASSERT_EQ(t.raw_data(), p2);

  cuda::Stream side(0);
  StreamGate gate(side.get());  // side runs nothing until the gate opens
  KEEL_CUDA_CHECK(cudaMemsetAsync(t.raw_data(), 0, bytes, side.get()));
  cuda::record_stream(t, side.get());
  a1 = Tensor();
  t = Tensor();  // freed, but side has yet to write it
  Tensor u = empty({kBigFloats}, DType::F32, gpu());
  EXPECT_EQ(u.raw_data(), p1);  // not t's block
  gate.open();
  side.synchronize();
  Tensor v = empty({kBigFloats}, DType::F32, gpu());
  EXPECT_EQ(v.raw_data(), p2);  // back in circulation
  EXPECT_KEEL_ERROR(cuda::note_stream_use(&bytes, side.get()), "not a live allocation");
}

TEST(CudaStreams, EventsOrderWorkAcrossStreams) {
  KEEL_SKIP_WITHOUT_CUDA();
  const int64_t n = 1 << 22;
  Tensor x = arange(0, double(n), 1, DType::F32, gpu());  // on the current stream
  cuda::Stream s1(0), s2(0);
  cuda::Event made, copied(true), done(true);
  made.record(cuda::current_stream(0));
  Tensor y, z;
  {
    cuda::StreamGuard g(0, s1.get());
    made.wait(s1.get());
    copied.record(s1.get());
    y = x.clone();  // allocated and written on s1
    cuda::record_stream(x, s1.get());
    done.record(s1.get());
  }
  {
    cuda::StreamGuard g(0, s2.get());
    done.wait(s2.get());
    z = y.to(DType::BF16).to(DType::F32);  // reads y on s2; z is s2's
    cuda::record_stream(y, s2.get());
  }
  // Back on the device's own current stream, which reads z after s2 wrote it.
  cuda::Event z_ready;
  z_ready.record(s2.get());
  z_ready.wait(cuda::current_stream(0));
  cuda::record_stream(z, cuda::current_stream(0));
  done.synchronize();
  EXPECT_TRUE(done.query());
  EXPECT_GE(copied.elapsed_ms(done), 0.0f);
  Doubles zv = to_doubles(z);
  ASSERT_EQ(int64_t(zv.size()), n);
  for (int64_t i : {int64_t(0), int64_t(255), int64_t(256), int64_t(257), n - 1}) {
    const double want = to_doubles(from_vector<float>({float(i)}, {1}).to(DType::BF16))[0];
    EXPECT_EQ(zv[size_t(i)], want) << i;
  }
  cuda::Event never;
  never.wait(s1.get());  // an event never recorded: nothing to wait for
  never.synchronize();
  EXPECT_TRUE(never.query());
  EXPECT_KEEL_ERROR(never.elapsed_ms(done), "recorded");
}

TEST(CudaStreams, GuardsRestoreStreamAndDevice) {
  KEEL_SKIP_WITHOUT_CUDA();
  cudaStream_t before = cuda::current_stream(0);
  {
    cuda::Stream s(0);
    cuda::StreamGuard g(0, s.get());
    EXPECT_EQ(cuda::current_stream(0), s.get());
    EXPECT_EQ(cuda::stream_device(s.get()), 0);
  }
  EXPECT_EQ(cuda::current_stream(0), before);
  EXPECT_KEEL_ERROR(cuda::set_current_stream(0, nullptr), "legacy default stream");
  int dev = -1;
  KEEL_CUDA_CHECK(cudaGetDevice(&dev));
  { cuda::DeviceGuard g(0); }
  int after = -1;
  KEEL_CUDA_CHECK(cudaGetDevice(&after));
  EXPECT_EQ(after, dev);
}

TEST(CudaPinned, PinnedTensorsRoundTripAndCopyAsynchronously) {
  KEEL_SKIP_WITHOUT_CUDA();
  const int64_t n = 100000;
  Tensor h = empty_pinned({n}, DType::F32);
  EXPECT_TRUE(h.storage()->pinned());
  EXPECT_TRUE(h.device().is_cpu());
  EXPECT_TRUE(cuda::is_pinned(static_cast<char*>(h.raw_data()) + 1000));
  EXPECT_FALSE(cuda::is_pinned(empty({4}).raw_data()));
  EXPECT_GE(cuda::pinned_memory_stats().allocated, size_t(n) * 4);
  float* p = h.data<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = float(i) * 0.5f;

  Tensor d = h.to(gpu());  // synchronous: h may change once it returns
  p[0] = -1.0f;
  EXPECT_EQ(to_doubles(d)[0], 0.0);

  cuda::Stream side(0);
  Tensor d2 = empty({n}, DType::F32, gpu());
  cuda::copy_async(d2, h, side.get());
  Tensor back = empty_pinned({n}, DType::F32);
  cuda::copy_async(back, d2, side.get());
  cuda::record_stream(d2, side.get());
  cuda::Event done;
  done.record(side.get());
  done.synchronize();
  EXPECT_EQ(to_doubles(back), to_doubles(h));
  EXPECT_KEEL_ERROR(cuda::copy_async(d2, empty({n}, DType::BF16), side.get()),
                    "dtype and shape must match");
}

TEST(CudaPinned, BlockIsNotReusedWhileACopyMayReadIt) {
  KEEL_SKIP_WITHOUT_CUDA();
  cuda::Stream side(0);
  Tensor dst = empty({1024}, DType::F32, gpu());
  cuda::record_stream(dst, side.get());
  void* p = nullptr;
  {
    StreamGate gate(side.get());
    Tensor h = empty_pinned({1024}, DType::F32);
    h.fill_(2.0);
    p = h.raw_data();
    cuda::copy_async(dst, h, side.get());  // queued behind the gate
    h = Tensor();                          // freed: the copy has not read it yet
    Tensor again = empty_pinned({1024}, DType::F32);
    EXPECT_NE(again.raw_data(), p);
  }
  side.synchronize();
  EXPECT_EQ(to_doubles(dst.to(Device::cpu())), Doubles(1024, 2.0));
  EXPECT_GT(cuda::empty_pinned_cache(), 0u);
}

TEST(CudaCopies, AcrossTwoDevices) {
  KEEL_SKIP_WITHOUT_CUDA();
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs two CUDA devices";
  Tensor x = testing::uniform({64, 33}, 7);
  Tensor a = x.to(Device::cuda(0));
  Tensor b = a.to(Device::cuda(1));
  EXPECT_EQ(b.device(), Device::cuda(1));
  EXPECT_EQ(to_doubles(b), to_doubles(x));
  Tensor c = empty({33, 64}, DType::BF16, Device::cuda(1));
  c.copy_(a.transpose(0, 1));  // strided and converting across devices
  EXPECT_EQ(to_doubles(c), to_doubles(x.transpose(0, 1).to(DType::BF16)));
}

#else  // a build without CUDA

TEST(CudaAllocator, DeviceTensorsNeedACudaBuild) {
  EXPECT_KEEL_ERROR(empty({2}, DType::F32, Device::cuda(0)), "cuda:0", "built without CUDA");
  EXPECT_KEEL_ERROR(zeros({2}).to(Device::cuda(0)), "built without CUDA");
}

#endif

TEST(CudaPinned, PlainHostMemoryWithoutADevice) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present: pinned memory is real";
  Tensor h = empty_pinned({16}, DType::I32);
  EXPECT_FALSE(h.storage()->pinned());
  h.fill_(4);
  EXPECT_EQ(to_doubles(h), Doubles(16, 4.0));
}

}  // namespace
}  // namespace keel
