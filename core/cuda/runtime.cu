// The CUDA side of core: device queries, current streams, events, the caching
// device allocator and the caching pinned host allocator (logic in
// core/cuda/caching_pool.h), and byte copies between host and devices.
//
// Host<->device copies run with cudaMemcpyAsync on the device's current
// stream, so they order with keel's kernels (a plain cudaMemcpy would run on
// the legacy stream, which does not order with non-blocking streams).
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "core/cuda/allocator.h"
#include "core/cuda/check.h"
#include "core/cuda/stream.h"
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

}  // namespace keel

namespace keel::kernels {
void set_cuda_device(Device device) { KEEL_CUDA_CHECK(cudaSetDevice(device.index)); }
}  // namespace keel::kernels

// ---- streams, guards, events ----------------------------------------------------

namespace keel::cuda {

namespace {
constexpr int kMaxDevices = 64;
std::atomic<cudaStream_t> g_streams[kMaxDevices] = {};
std::mutex g_stream_mu;

void check_device(int device) {
  KEEL_CHECK(device >= 0 && device < kMaxDevices && device < cuda_device_count(),
             "CUDA device index ", device, " is out of range (", cuda_device_count(),
             " devices visible)");
}
}  // namespace

cudaStream_t current_stream(int device) {
  check_device(device);
  cudaStream_t s = g_streams[device].load(std::memory_order_acquire);
  if (s) return s;
  std::lock_guard<std::mutex> lock(g_stream_mu);
  s = g_streams[device].load(std::memory_order_acquire);
  if (!s) {
    DeviceGuard guard(device);
    KEEL_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    g_streams[device].store(s, std::memory_order_release);
  }
  return s;
}

cudaStream_t set_current_stream(int device, cudaStream_t stream) {
  cudaStream_t prev = current_stream(device);
  KEEL_CHECK(stream != nullptr, "set_current_stream: keel never runs on the legacy default stream");
  KEEL_CHECK(stream_device(stream) == device,
             "set_current_stream: the stream belongs to cuda:", stream_device(stream),
             ", not cuda:", device);
  g_streams[device].store(stream, std::memory_order_release);
  return prev;
}

void synchronize(int device) { KEEL_CUDA_CHECK(cudaStreamSynchronize(current_stream(device))); }

int stream_device(cudaStream_t stream) {
  int dev = -1;
  KEEL_CUDA_CHECK(cudaStreamGetDevice(stream, &dev));
  return dev;
}

DeviceGuard::DeviceGuard(int device) {
  KEEL_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) KEEL_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() {
  int cur = -1;
  if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_) cudaSetDevice(prev_);
}

Stream::Stream(int device, int priority) : device_(device) {
  check_device(device);
  DeviceGuard guard(device);
  KEEL_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, priority));
}

Stream::~Stream() {
  if (!stream_) return;
  cudaStreamSynchronize(stream_);  // see the class comment
  cudaStreamDestroy(stream_);
}

Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    if (stream_) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
    device_ = o.device_;
    stream_ = o.stream_;
    o.stream_ = nullptr;
  }
  return *this;
}

void Stream::synchronize() const { KEEL_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

bool Stream::query() const {
  cudaError_t err = cudaStreamQuery(stream_);
  if (err == cudaErrorNotReady) {
    cudaGetLastError();  // "not ready" is an answer, not an error to report later
    return false;
  }
  KEEL_CUDA_CHECK(err);
  return true;
}

Event::~Event() {
  if (event_) cudaEventDestroy(event_);
}

Event::Event(Event&& o) noexcept : timing_(o.timing_), device_(o.device_), event_(o.event_) {
  o.event_ = nullptr;
}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    if (event_) cudaEventDestroy(event_);
    timing_ = o.timing_;
    device_ = o.device_;
    event_ = o.event_;
    o.event_ = nullptr;
  }
  return *this;
}

void Event::record(cudaStream_t stream) {
  const int dev = stream_device(stream);
  if (!event_) {
    DeviceGuard guard(dev);
    KEEL_CUDA_CHECK(
        cudaEventCreateWithFlags(&event_, timing_ ? cudaEventDefault : cudaEventDisableTiming));
    device_ = dev;
  }
  KEEL_CHECK(dev == device_, "Event::record: the event belongs to cuda:", device_,
             " but the stream to cuda:", dev);
  KEEL_CUDA_CHECK(cudaEventRecord(event_, stream));
}

void Event::wait(cudaStream_t stream) const {
  if (event_) KEEL_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0));
}

void Event::synchronize() const {
  if (event_) KEEL_CUDA_CHECK(cudaEventSynchronize(event_));
}

bool Event::query() const {
  if (!event_) return true;
  cudaError_t err = cudaEventQuery(event_);
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  KEEL_CUDA_CHECK(err);
  return true;
}

float Event::elapsed_ms(const Event& end) const {
  KEEL_CHECK(event_ && end.event_, "Event::elapsed_ms: both events must be recorded");
  KEEL_CHECK(timing_ && end.timing_, "Event::elapsed_ms: both events need enable_timing");
  float ms = 0;
  KEEL_CUDA_CHECK(cudaEventElapsedTime(&ms, event_, end.event_));
  return ms;
}

// ---- allocator backends -----------------------------------------------------------

namespace {

// Events for blocks used on foreign streams, recycled per device.
struct PooledEvent {
  cudaEvent_t event;
  int device;
};

class EventCache {
 public:
  PooledEvent* acquire(int device) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_[device].empty()) {
        PooledEvent* e = free_[device].back();
        free_[device].pop_back();
        return e;
      }
    }
    DeviceGuard guard(device);
    cudaEvent_t ev = nullptr;
    KEEL_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    return new PooledEvent{ev, device};
  }
  void release(PooledEvent* e) {
    std::lock_guard<std::mutex> lock(mu_);
    free_[e->device].push_back(e);
  }

 private:
  std::mutex mu_;
  std::vector<PooledEvent*> free_[kMaxDevices];
};

EventCache& event_cache() {
  static EventCache* c = new EventCache;  // leaked: outlives every static tensor
  return *c;
}

class StreamEventBackend : public PoolBackend {
 public:
  void* record_event(void* stream) override {
    auto s = static_cast<cudaStream_t>(stream);
    PooledEvent* e = event_cache().acquire(stream_device(s));
    KEEL_CUDA_CHECK(cudaEventRecord(e->event, s));
    return e;
  }
  bool event_done(void* event) override {
    cudaError_t err = cudaEventQuery(static_cast<PooledEvent*>(event)->event);
    if (err == cudaErrorNotReady) {
      cudaGetLastError();
      return false;
    }
    KEEL_CUDA_CHECK(err);
    return true;
  }
  void event_wait(void* event) override {
    KEEL_CUDA_CHECK(cudaEventSynchronize(static_cast<PooledEvent*>(event)->event));
  }
  void event_release(void* event) override {
    event_cache().release(static_cast<PooledEvent*>(event));
  }
};

class DeviceBackend final : public StreamEventBackend {
 public:
  void* raw_alloc(int device, size_t nbytes) override {
    DeviceGuard guard(device);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, nbytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it so later launch checks do not see it
      return nullptr;
    }
    KEEL_CUDA_CHECK(err);
    return p;
  }
  void raw_free(int device, void* ptr) override {
    DeviceGuard guard(device);
    KEEL_CUDA_CHECK(cudaFree(ptr));
  }
  std::pair<size_t, size_t> device_memory(int device) override {
    DeviceGuard guard(device);
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) cudaGetLastError();
    return {free_b, total_b};
  }
  const char* name() const override { return "CUDA"; }
  std::string device_name(int device) const override { return "cuda:" + std::to_string(device); }
};

class PinnedBackend final : public StreamEventBackend {
 public:
  void* raw_alloc(int, size_t nbytes) override {
    void* p = nullptr;
    // Portable: page-locked for every device's context, not just the current one.
    cudaError_t err = cudaHostAlloc(&p, nbytes, cudaHostAllocPortable);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      return nullptr;
    }
    KEEL_CUDA_CHECK(err);
    return p;
  }
  void raw_free(int, void* ptr) override { KEEL_CUDA_CHECK(cudaFreeHost(ptr)); }
  std::pair<size_t, size_t> device_memory(int) override {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    return {size_t(sysconf(_SC_AVPHYS_PAGES)) * page, size_t(sysconf(_SC_PHYS_PAGES)) * page};
  }
  const char* name() const override { return "pinned host"; }
  std::string device_name(int) const override { return "the host"; }
};

CachingPool& device_pool() {
  static CachingPool* p = new CachingPool(*new DeviceBackend);  // leaked, as event_cache()
  return *p;
}

// Pinned blocks live in one pool under device 0 and stream nullptr: no CUDA
// stream owns host memory, so every stream that copies from or into a
// pinned block is noted and its copy must complete before the block is
// handed out again.
constexpr int kPinnedDevice = 0;

CachingPool& pinned_pool() {
  static CachingPool* p = new CachingPool(*new PinnedBackend);
  return *p;
}

class CudaAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device device) override {
    return device_pool().allocate(device.index, current_stream(device.index), nbytes);
  }
  void deallocate(void* ptr, size_t, Device) override { device_pool().deallocate(ptr); }
};

class PinnedAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device) override {
    return pinned_pool().allocate(kPinnedDevice, nullptr, nbytes);
  }
  void deallocate(void* ptr, size_t, Device) override { pinned_pool().deallocate(ptr); }
};

// True for page-locked host memory (keel's pinned blocks, cudaHostRegister'd
// memory), which CUDA copies read and write asynchronously.
bool host_page_locked(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return attr.type == cudaMemoryTypeHost;
}

}  // namespace

MemoryStats memory_stats(int device) { return device_pool().stats(device); }
void reset_peak_memory_stats(int device) { device_pool().reset_peaks(device); }
size_t empty_cache(int device) { return device_pool().empty_cache(device); }

void note_stream_use(const void* ptr, cudaStream_t stream) {
  device_pool().note_stream_use(ptr, stream);
}

void record_stream(const Tensor& t, cudaStream_t stream) {
  KEEL_CHECK(t.device().is_cuda(), "record_stream: ", t.describe(), " is not a CUDA tensor");
  note_stream_use(t.storage()->data(), stream);
}

MemoryStats pinned_memory_stats() { return pinned_pool().stats(kPinnedDevice); }
size_t empty_pinned_cache() { return pinned_pool().empty_cache(-1); }
bool is_pinned(const void* ptr) { return pinned_pool().owns(ptr); }

// ---- copies ---------------------------------------------------------------------

void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device,
                      size_t nbytes, cudaStream_t stream) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  const int sdev = stream_device(stream);
  const Device on = dst_device.is_cuda() ? dst_device : src_device;
  KEEL_CHECK(sdev == on.index, "copy_bytes_async: ", src_device.str(), " -> ", dst_device.str(),
             " needs a stream of ", on.str(), ", got one of cuda:", sdev);
  DeviceGuard guard(on.index);
  if (dst_device.is_cuda() && src_device.is_cuda()) {
    if (dst_device.index == src_device.index)
      KEEL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream));
    else
      KEEL_CUDA_CHECK(
          cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, nbytes, stream));
    return;
  }
  const bool h2d = dst_device.is_cuda();
  KEEL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes,
                                  h2d ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, stream));
  const void* host = h2d ? src : dst;
  if (pinned_pool().owns(host)) pinned_pool().note_stream_use(host, stream);
}

void copy_async(Tensor& dst, const Tensor& src, cudaStream_t stream) {
  KEEL_CHECK(dst.dtype() == src.dtype() && dst.sizes() == src.sizes(),
             "copy_async: ", src.describe(), " -> ", dst.describe(),
             ": dtype and shape must match");
  KEEL_CHECK(dst.is_contiguous() && src.is_contiguous(), "copy_async: ", src.describe(), " -> ",
             dst.describe(), ": both must be contiguous");
  copy_bytes_async(dst.raw_data(), dst.device(), src.raw_data(), src.device(),
                   size_t(dst.numel()) * dst.element_size(), stream);
}

}  // namespace keel::cuda

namespace keel {

Allocator& cuda_allocator() {
  static cuda::CudaAllocator* a = new cuda::CudaAllocator;
  return *a;
}

Allocator& cuda_pinned_allocator() {
  static cuda::PinnedAllocator* a = new cuda::PinnedAllocator;
  return *a;
}

// The synchronous copy behind keel::copy_bytes: when it returns, host memory
// may be read (device-to-host) or reused (host-to-device), and device memory
// is ordered with the devices' current streams.
void cuda_copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                     size_t nbytes) {
  if (nbytes == 0) return;
  using cuda::current_stream;
  if (dst_device.is_cuda() && src_device.is_cuda()) {
    cudaStream_t ds = current_stream(dst_device.index);
    if (dst_device.index == src_device.index) {
      cuda::DeviceGuard guard(dst_device.index);
      KEEL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, ds));
      return;
    }
    // Across devices: the copy runs on the destination's stream after the
    // source's stream has produced src, and the source's stream waits for
    // the copy before it may reuse src's memory.
    cudaStream_t ss = current_stream(src_device.index);
    cuda::Event produced, copied;
    produced.record(ss);
    produced.wait(ds);
    cuda::copy_bytes_async(dst, dst_device, src, src_device, nbytes, ds);
    copied.record(ds);
    copied.wait(ss);
    return;
  }
  if (dst_device.is_cuda()) {
    cudaStream_t s = current_stream(dst_device.index);
    cuda::DeviceGuard guard(dst_device.index);
    KEEL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, s));
    // Pageable sources are staged before cudaMemcpyAsync returns; page-locked
    // ones are read by the DMA engine later, so wait before the caller may
    // change them.
    if (cuda::host_page_locked(src)) KEEL_CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  cudaStream_t s = current_stream(src_device.index);
  cuda::DeviceGuard guard(src_device.index);
  KEEL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s));
  KEEL_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace keel
