// Host allocator statistics: live bytes and the high-water mark, which the
// activation-memory benchmarks read.
#include "core/storage.h"

#include <gtest/gtest.h>

#include "core/tensor.h"

namespace keel {
namespace {

TEST(HostMemoryStats, TracksLiveBytesAndPeak) {
  const HostMemoryStats before = host_memory_stats();
  constexpr size_t kBytes = size_t(3) << 20;  // a cached-size block: rounded to pages, exactly
  {
    Tensor t = empty({int64_t(kBytes / 4)}, DType::F32);  // (kBytes / 4)
    const HostMemoryStats live = host_memory_stats();
    EXPECT_EQ(live.allocated, before.allocated + kBytes);
    EXPECT_GE(live.peak_allocated, live.allocated);
    {
      Tensor small = empty({10}, DType::F32);  // (10): one 64-byte unit
      EXPECT_EQ(host_memory_stats().allocated, live.allocated + kCpuAlignment);
    }
    EXPECT_EQ(host_memory_stats().allocated, live.allocated);
  }
  const HostMemoryStats after = host_memory_stats();
  EXPECT_EQ(after.allocated, before.allocated);  // a block returned to the cache is not live
  EXPECT_GE(after.peak_allocated, before.allocated + kBytes);
  reset_host_peak_memory_stats();
  EXPECT_EQ(host_memory_stats().peak_allocated, host_memory_stats().allocated);
}

}  // namespace
}  // namespace keel
