// The CUDA side of core: device queries, the device allocator and copies.
// The allocator here hands out blocks straight from cudaMalloc; the caching
// allocator (per-stream free lists) replaces it in the CUDA backend issue
// behind the same Allocator interface.
#include <string>

#include "core/cuda/check.h"
#include "core/storage.h"

namespace keel {

namespace detail {
void cuda_fail(const char* stmt, const char* err, const char* file, int line) {
  int dev = -1;
  cudaGetDevice(&dev);
  throw_error(file, line, cat(stmt, " failed: ", err, " (device ", dev, ")"));
}
}  // namespace detail

int cuda_device_count() {
  static const int n = [] {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no driver" error
      return 0;
    }
    return count;
  }();
  return n;
}

bool cuda_available() { return cuda_device_count() > 0; }

namespace {
class CudaAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device device) override {
    KEEL_CUDA_CHECK(cudaSetDevice(device.index));
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, nbytes == 0 ? 256 : nbytes);
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      KEEL_FAIL("CUDA out of memory on ", device.str(), ": asked for ", nbytes, " bytes, ",
                free_b, " free of ", total_b, " (", cudaGetErrorString(err), ")");
    }
    return p;
  }
  void deallocate(void* ptr, size_t, Device device) override {
    cudaSetDevice(device.index);
    cudaFree(ptr);
  }
};
}  // namespace

Allocator& cuda_allocator() {
  static CudaAllocator a;
  return a;
}

void cuda_copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                     size_t nbytes) {
  if (dst_device.is_cuda()) KEEL_CUDA_CHECK(cudaSetDevice(dst_device.index));
  else KEEL_CUDA_CHECK(cudaSetDevice(src_device.index));
  KEEL_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDefault));
}

}  // namespace keel

namespace keel::kernels {
void set_cuda_device(Device device) { KEEL_CUDA_CHECK(cudaSetDevice(device.index)); }
}  // namespace keel::kernels

namespace keel::cuda {

namespace {
constexpr int kMaxDevices = 64;
cudaStream_t g_streams[kMaxDevices] = {};
}  // namespace

cudaStream_t current_stream(int device) {
  KEEL_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " out of range");
  if (!g_streams[device]) {
    KEEL_CUDA_CHECK(cudaSetDevice(device));
    KEEL_CUDA_CHECK(cudaStreamCreateWithFlags(&g_streams[device], cudaStreamNonBlocking));
  }
  return g_streams[device];
}

cudaStream_t set_current_stream(int device, cudaStream_t stream) {
  cudaStream_t prev = current_stream(device);
  g_streams[device] = stream;
  return prev;
}

}  // namespace keel::cuda
