#include "core/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>

#include "core/error.h"

namespace keel {

#ifdef KEEL_WITH_CUDA
Allocator& cuda_allocator();         // core/cuda/runtime.cu
Allocator& cuda_pinned_allocator();  // core/cuda/runtime.cu
void cuda_copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                     size_t nbytes);
#endif

namespace {

// Host memory. Blocks of kCacheMin bytes or more are kept when freed and
// handed out again for a request of the same rounded size: a training step
// allocates the same large activations every step, and returning them to
// the OS (glibc unmaps big blocks) made every step page-fault and zero them
// afresh, a quarter of a small GPT's step (bench/README.md). The cache is
// bounded; past kCacheMax bytes the oldest cached blocks are released.
class CpuAllocator final : public Allocator {
 public:
  static constexpr size_t kCacheMin = size_t(1) << 20;
  static constexpr size_t kCacheMax = size_t(4) << 30;
  static constexpr size_t kPage = 4096;

  ~CpuAllocator() override {
    for (auto& [size, p] : free_) std::free(p);
  }

  void* allocate(size_t nbytes, Device) override {
    const size_t size = rounded(nbytes);
    void* p = take(size);
    const size_t now = allocated_.fetch_add(size, std::memory_order_relaxed) + size;
    size_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    return p;
  }

  void deallocate(void* ptr, size_t nbytes, Device) override {
    const size_t size = rounded(nbytes);
    allocated_.fetch_sub(size, std::memory_order_relaxed);
    give(ptr, size);
  }

  HostMemoryStats stats() const {
    return {allocated_.load(std::memory_order_relaxed), peak_.load(std::memory_order_relaxed)};
  }
  void reset_peak() { peak_.store(allocated_.load(std::memory_order_relaxed)); }

 private:
  void* take(size_t size) {
    if (size >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= size;
        return p;
      }
    }
    void* p = std::aligned_alloc(kCpuAlignment, size);
    if (!p && size >= kCacheMin) {  // give the cache back and try once more
      release_all();
      p = std::aligned_alloc(kCpuAlignment, size);
    }
    KEEL_CHECK(p != nullptr, "out of host memory: asked for ", size, " bytes");
    return p;
  }

  void give(void* ptr, size_t size) {
    if (size < kCacheMin) {
      std::free(ptr);
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    free_.emplace(size, ptr);
    cached_ += size;
    while (cached_ > kCacheMax && !free_.empty()) {  // drop the largest blocks first
      auto last = std::prev(free_.end());
      cached_ -= last->first;
      std::free(last->second);
      free_.erase(last);
    }
  }

  static size_t rounded(size_t nbytes) {
    if (nbytes == 0) return kCpuAlignment;
    const size_t unit = nbytes >= kCacheMin ? kPage : kCpuAlignment;
    return (nbytes + unit - 1) / unit * unit;
  }
  void release_all() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, p] : free_) std::free(p);
    free_.clear();
    cached_ = 0;
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;  // rounded size -> block
  size_t cached_ = 0;
  std::atomic<size_t> allocated_{0};
  std::atomic<size_t> peak_{0};
};

CpuAllocator& host_allocator() {
  static CpuAllocator a;
  return a;
}
}  // namespace

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Allocator& cpu_allocator() { return host_allocator(); }

HostMemoryStats host_memory_stats() { return host_allocator().stats(); }
void reset_host_peak_memory_stats() { host_allocator().reset_peak(); }

Allocator& allocator_for(Device device) {
  if (device.is_cpu()) return cpu_allocator();
#ifdef KEEL_WITH_CUDA
  KEEL_CHECK(device.index >= 0 && device.index < cuda_device_count(), "device ", device.str(),
             " is not available (", cuda_device_count(), " CUDA devices visible)");
  return cuda_allocator();
#else
  KEEL_FAIL("device ", device.str(), " requested but keel was built without CUDA (-DKEEL_CUDA=ON)");
#endif
}

Allocator& pinned_allocator() {
#ifdef KEEL_WITH_CUDA
  if (cuda_available()) return cuda_pinned_allocator();
#endif
  return cpu_allocator();
}

Storage::Storage(size_t nbytes, Device device) : Storage(nbytes, device, allocator_for(device)) {}

Storage::Storage(size_t nbytes, Device device, Allocator& allocator)
    : nbytes_(nbytes), device_(device), allocator_(&allocator) {
  data_ = allocator.allocate(nbytes, device);
}

Storage::~Storage() {
  if (data_) allocator_->deallocate(data_, nbytes_, device_);
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
#ifdef KEEL_WITH_CUDA
  cuda_copy_bytes(dst, dst_device, src, src_device, nbytes);
#else
  KEEL_FAIL("copy between ", src_device.str(), " and ", dst_device.str(),
            " needs a CUDA build of keel");
#endif
}

#ifndef KEEL_WITH_CUDA
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
#endif

}  // namespace keel
