// Storage: one allocation on one device, shared by every tensor view of it.
// Allocators are per device type; the CUDA one is a caching allocator whose
// blocks are keyed by stream (core/cuda/allocator.h), the CPU one aligns to
// 64 bytes. Host memory may also come from the pinned (page-locked)
// allocator, which CUDA copies can read and write asynchronously; a Storage
// remembers its allocator so it is freed by the one that made it.
#pragma once

#include <cstddef>
#include <memory>

#include "core/device.h"

namespace keel {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes, Device device) = 0;
  virtual void deallocate(void* ptr, size_t nbytes, Device device) = 0;
};

Allocator& cpu_allocator();
Allocator& allocator_for(Device device);  // throws keel::Error if unavailable
// What cpu_allocator() holds for live tensors, in bytes (each block's
// rounded size; cached free blocks are not counted), and the high-water mark
// since the start or the last reset: the benchmarks' activation memory.
struct HostMemoryStats {
  size_t allocated = 0;
  size_t peak_allocated = 0;
};
HostMemoryStats host_memory_stats();
// Sets peak_allocated to the current allocated bytes.
void reset_host_peak_memory_stats();
// Page-locked host memory from a caching allocator (core/cuda/allocator.h);
// plain host memory (cpu_allocator) in a build without CUDA or when no
// device is visible.
Allocator& pinned_allocator();

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  // Memory from a given allocator (e.g. pinned_allocator() for host memory).
  Storage(size_t nbytes, Device device, Allocator& allocator);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  Allocator& allocator() const { return *allocator_; }
  // Host memory from the pinned allocator (page-locked in CUDA builds).
  bool pinned() const { return device_.is_cpu() && allocator_ != &cpu_allocator(); }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

inline constexpr size_t kCpuAlignment = 64;

// Copies between any two devices (host<->device, device<->device).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

}  // namespace keel
