// The caching allocator's logic (core/cuda/caching_pool.h) on a fake device:
// size classes, per-stream reuse, splitting and merging, cross-stream use
// through events, the out-of-memory retry and message, empty_cache and the
// statistics. Needs no GPU, so it runs in every build.
#include "core/cuda/caching_pool.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <thread>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using cuda::CachingPool;
using cuda::MemoryStats;

constexpr size_t kMiB = size_t(1) << 20;

// A device of `capacity` bytes backed by host memory. Streams are opaque
// tokens; an event recorded on a stream completes once the test calls
// finish(stream) (or the pool waits on it, which stands for the host
// blocking until the device gets there).
class FakeDevice final : public cuda::PoolBackend {
 public:
  explicit FakeDevice(size_t capacity) : capacity_(capacity) {}
  ~FakeDevice() override {
    for (auto& [p, n] : blocks_) std::free(p);
  }

  void* raw_alloc(int, size_t n) override {
    if (used_ + n > capacity_) return nullptr;
    void* p = std::aligned_alloc(512, n);
    blocks_[p] = n;
    used_ += n;
    ++allocs;
    return p;
  }
  void raw_free(int, void* p) override {
    auto it = blocks_.find(p);
    ASSERT_NE(it, blocks_.end()) << "freeing a pointer the device never gave out";
    used_ -= it->second;
    blocks_.erase(it);
    std::free(p);
    ++frees;
  }
  std::pair<size_t, size_t> device_memory(int) override { return {capacity_ - used_, capacity_}; }

  struct Ev {
    void* stream;
    int seq;
  };
  void* record_event(void* stream) override {
    ++live_events;
    return new Ev{stream, ++recorded_[stream]};
  }
  bool event_done(void* e) override {
    auto* ev = static_cast<Ev*>(e);
    return finished_[ev->stream] >= ev->seq;
  }
  void event_wait(void* e) override {
    auto* ev = static_cast<Ev*>(e);
    finished_[ev->stream] = std::max(finished_[ev->stream], ev->seq);
    ++waits;
  }
  void event_release(void* e) override {
    --live_events;
    delete static_cast<Ev*>(e);
  }
  const char* name() const override { return "fake"; }
  std::string device_name(int d) const override { return "fake:" + std::to_string(d); }

  // Everything recorded on `stream` so far has run.
  void finish(void* stream) { finished_[stream] = recorded_[stream]; }
  size_t used() const { return used_; }

  int allocs = 0, frees = 0, waits = 0, live_events = 0;

 private:
  size_t capacity_, used_ = 0;
  std::map<void*, size_t> blocks_;
  std::map<void*, int> recorded_, finished_;
};

void* const s1 = reinterpret_cast<void*>(0x1000);
void* const s2 = reinterpret_cast<void*>(0x2000);

char* as_char(void* p) { return static_cast<char*>(p); }

TEST(CachingPool, FreedBlockComesBackOnTheSameStreamWithoutADeviceCall) {
  FakeDevice dev(64 * kMiB);
  CachingPool pool(dev);
  void* p = pool.allocate(0, s1, 1000);
  pool.deallocate(p);
  for (int i = 0; i < 100; ++i) {  // steady state: no more device allocations
    void* q = pool.allocate(0, s1, 900);
    EXPECT_EQ(q, p);
    pool.deallocate(q);
  }
  EXPECT_EQ(dev.allocs, 1);
  EXPECT_EQ(dev.frees, 0);
  MemoryStats s = pool.stats(0);
  EXPECT_EQ(s.cache_hits, 100u);
  EXPECT_EQ(s.segment_allocs, 1u);
  EXPECT_EQ(s.allocated, 0u);
  EXPECT_EQ(s.requested, 0u);
  EXPECT_EQ(s.reserved, CachingPool::kSmallSegment);
  EXPECT_EQ(s.cached(), CachingPool::kSmallSegment);
}

TEST(CachingPool, AnotherStreamGetsItsOwnBlocks) {
  FakeDevice dev(64 * kMiB);
  CachingPool pool(dev);
  void* p = pool.allocate(0, s1, 4096);
  pool.deallocate(p);
  void* q = pool.allocate(0, s2, 4096);
  // s1's cached block may still be read by work queued on s1: s2 must not get it.
  EXPECT_TRUE(as_char(q) < as_char(p) || as_char(q) >= as_char(p) + CachingPool::kSmallSegment);
  EXPECT_EQ(dev.allocs, 2);
  pool.deallocate(q);
}

TEST(CachingPool, SizeClassesAndStats) {
  FakeDevice dev(256 * kMiB);
  CachingPool pool(dev);
  EXPECT_EQ(CachingPool::round_size(0), 512u);
  EXPECT_EQ(CachingPool::round_size(1), 512u);
  EXPECT_EQ(CachingPool::round_size(513), 1024u);

  void* a = pool.allocate(0, s1, 1);  // small: a 2 MiB segment, 512 B block
  MemoryStats s = pool.stats(0);
  EXPECT_EQ(s.allocated, 512u);
  EXPECT_EQ(s.requested, 1u);
  EXPECT_EQ(s.reserved, 2 * kMiB);

  // Large: a 4 MiB segment; the 1.5 MiB tail is split off for other large requests.
  const size_t b_size = 5 * kMiB / 2, c_size = 5 * kMiB / 4;
  void* b = pool.allocate(0, s1, b_size);
  s = pool.stats(0);
  EXPECT_EQ(s.allocated, 512u + b_size);
  EXPECT_EQ(s.reserved, 6 * kMiB);
  EXPECT_EQ(s.cached(), 6 * kMiB - 512u - b_size);

  // The tail serves the next large request; what would be left of it (0.25
  // MiB) is too small to split off, so the block keeps it.
  void* c = pool.allocate(0, s1, c_size);
  EXPECT_EQ(as_char(c), as_char(b) + b_size);
  EXPECT_EQ(dev.allocs, 2);
  EXPECT_EQ(pool.stats(0).allocated, 512u + 4 * kMiB);
  EXPECT_EQ(pool.stats(0).requested, 1u + b_size + c_size);
  EXPECT_EQ(pool.stats(0).peak_allocated, 512u + 4 * kMiB);

  pool.deallocate(c);
  pool.deallocate(b);
  pool.deallocate(a);
  s = pool.stats(0);
  EXPECT_EQ(s.allocated, 0u);
  EXPECT_EQ(s.peak_allocated, 512u + 4 * kMiB);
  pool.reset_peaks(0);
  EXPECT_EQ(pool.stats(0).peak_allocated, 0u);
  EXPECT_EQ(pool.stats(0).peak_reserved, 6 * kMiB);
}

TEST(CachingPool, SplitBlocksMergeAndEmptyCacheReturnsWholeSegments) {
  FakeDevice dev(64 * kMiB);
  CachingPool pool(dev);
  void* a = pool.allocate(0, s1, 512);
  void* b = pool.allocate(0, s1, 512);
  void* c = pool.allocate(0, s1, 2048);
  EXPECT_EQ(as_char(b), as_char(a) + 512);
  EXPECT_EQ(as_char(c), as_char(b) + 512);
  EXPECT_EQ(dev.allocs, 1);
  pool.deallocate(b);
  EXPECT_EQ(pool.empty_cache(0), 0u);  // the segment still holds a and c
  EXPECT_EQ(dev.frees, 0);
  void* d = pool.allocate(0, s1, 512);  // best fit: b's hole
  EXPECT_EQ(d, b);
  pool.deallocate(a);
  pool.deallocate(d);
  pool.deallocate(c);                      // all three merge back into one free segment
  void* big = pool.allocate(0, s1, kMiB);  // fits only if the segment merged
  EXPECT_EQ(big, a);
  pool.deallocate(big);
  EXPECT_EQ(pool.empty_cache(0), 2 * kMiB);
  EXPECT_EQ(dev.frees, 1);
  EXPECT_EQ(dev.used(), 0u);
  EXPECT_EQ(pool.stats(0).reserved, 0u);
  EXPECT_EQ(pool.stats(0).segment_frees, 1u);
}

TEST(CachingPool, BlockUsedOnAnotherStreamWaitsForIt) {
  FakeDevice dev(64 * kMiB);
  CachingPool pool(dev);
  void* p = pool.allocate(0, s1, 512);
  pool.note_stream_use(as_char(p) + 100, s2);  // an interior pointer names the block too
  pool.note_stream_use(p, s1);                 // its own stream: nothing to do
  pool.deallocate(p);
  EXPECT_EQ(dev.live_events, 1);
  void* q = pool.allocate(0, s1, 512);  // s2 has not finished: p stays out
  EXPECT_NE(q, p);
  dev.finish(s2);
  void* r = pool.allocate(0, s1, 512);  // now p is back
  EXPECT_EQ(r, p);
  EXPECT_EQ(dev.live_events, 0);
  pool.deallocate(q);
  pool.deallocate(r);
  EXPECT_KEEL_ERROR(pool.note_stream_use(p, s2), "not a live allocation");
}

TEST(CachingPool, EmptyCacheWaitsForPendingBlocks) {
  FakeDevice dev(64 * kMiB);
  CachingPool pool(dev);
  void* p = pool.allocate(0, s1, 4 * kMiB);
  pool.note_stream_use(p, s2);
  pool.deallocate(p);
  EXPECT_EQ(pool.empty_cache(-1), 4 * kMiB);
  EXPECT_EQ(dev.waits, 1);
  EXPECT_EQ(dev.used(), 0u);
}

TEST(CachingPool, OutOfMemoryFreesTheCacheAndRetries) {
  FakeDevice dev(8 * kMiB);
  CachingPool pool(dev);
  void* p = pool.allocate(0, s1, 6 * kMiB);
  pool.deallocate(p);                        // cached for s1
  void* q = pool.allocate(0, s2, 4 * kMiB);  // s2 cannot use s1's block: flush and retry
  EXPECT_NE(q, nullptr);
  MemoryStats s = pool.stats(0);
  EXPECT_EQ(s.oom_retries, 1u);
  EXPECT_EQ(s.segment_frees, 1u);
  EXPECT_EQ(s.reserved, 4 * kMiB);
  EXPECT_KEEL_ERROR(pool.allocate(0, s1, size_t(1) << 50), "fake out of memory on fake:0",
                    "tried to allocate 1.00 PiB (1125899906842624 bytes)", "4.00 MiB", "in use",
                    "cached", "the device has 4.00 MiB (4194304 bytes) free of 8.00 MiB");
  pool.deallocate(q);
  EXPECT_KEEL_ERROR(pool.allocate(0, s1, size_t(1) << 63), "too large");
}

TEST(CachingPool, ForeignPointerAborts) {
  FakeDevice dev(8 * kMiB);
  CachingPool pool(dev);
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenMP/BLAS threads may exist
  int x = 0;
  EXPECT_DEATH(pool.deallocate(&x), "did not allocate");
}

TEST(CachingPool, DestructorReturnsEverySegment) {
  FakeDevice dev(64 * kMiB);
  {
    CachingPool pool(dev);
    pool.allocate(0, s1, 100);
    pool.allocate(1, s2, 5 * kMiB);
    void* p = pool.allocate(0, s1, 700);
    pool.note_stream_use(p, s2);
    pool.deallocate(p);
  }
  EXPECT_EQ(dev.used(), 0u);
  EXPECT_EQ(dev.live_events, 0);
}

TEST(CachingPool, ThreadsOnTheirOwnStreams) {
  FakeDevice dev(512 * kMiB);
  CachingPool pool(dev);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool, t] {
      void* stream = reinterpret_cast<void*>(uintptr_t(0x100 * (t + 1)));
      std::vector<void*> held;
      for (int i = 0; i < 500; ++i) {
        held.push_back(pool.allocate(0, stream, size_t(512 * (1 + (i * 7919) % 64))));
        if (i % 3 == 2) {
          pool.deallocate(held.front());
          held.erase(held.begin());
        }
      }
      for (void* p : held) pool.deallocate(p);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(pool.stats(0).allocated, 0u);
  EXPECT_EQ(pool.stats(0).requested, 0u);
  pool.empty_cache(0);
  EXPECT_EQ(dev.used(), 0u);
}

}  // namespace
}  // namespace keel
