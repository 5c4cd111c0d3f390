// Storage: one allocation on one device, shared by every tensor view of it.
// Allocators are per device type; the CUDA one is a caching allocator whose
// blocks are keyed by stream (core/cuda/), the CPU one aligns to 64 bytes.
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

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

inline constexpr size_t kCpuAlignment = 64;

// Copies between any two devices (host<->device, device<->device).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

}  // namespace keel
