#include "core/storage.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace keel {

#ifdef KEEL_WITH_CUDA
Allocator& cuda_allocator();         // core/cuda/runtime.cu
Allocator& cuda_pinned_allocator();  // core/cuda/runtime.cu
void cuda_copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                     size_t nbytes);
#endif

namespace {
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device) override {
    size_t rounded = (nbytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
    void* p = std::aligned_alloc(kCpuAlignment, rounded == 0 ? kCpuAlignment : rounded);
    KEEL_CHECK(p != nullptr, "out of host memory: asked for ", nbytes, " bytes");
    return p;
  }
  void deallocate(void* ptr, size_t, Device) override { std::free(ptr); }
};
}  // namespace

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Allocator& cpu_allocator() {
  static CpuAllocator a;
  return a;
}

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
