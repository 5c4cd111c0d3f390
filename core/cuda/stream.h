// The CUDA streams keel's work runs on, and events to order them. Each device
// has a current stream (a non-blocking stream created on first use);
// launchers take it from here and never use the legacy default stream, so
// copies and kernels order among themselves and overlap with other streams
// (e.g. NCCL's).
//
// Memory and streams: a block from keel's allocator belongs to the stream
// that was current when it was allocated and is reused only on that stream
// (core/cuda/caching_pool.h). Using it on another stream needs either
// note_stream_use (core/cuda/allocator.h) or an Event that makes the owning
// stream wait for the other before the memory is freed.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "core/device.h"

namespace keel::cuda {

cudaStream_t current_stream(int device);
// Makes `stream` the current stream of `device` (e.g. a side stream for
// communication); returns the previous one. The stream must belong to
// `device` and outlive its time as current.
cudaStream_t set_current_stream(int device, cudaStream_t stream);
// Blocks the host until the current stream of `device` has finished its work.
void synchronize(int device);
// The device a stream belongs to.
int stream_device(cudaStream_t stream);

// Makes `device` the CUDA runtime's current device for a scope.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// Makes `stream` the current stream of `device` for a scope.
class StreamGuard {
 public:
  StreamGuard(int device, cudaStream_t stream)
      : device_(device), prev_(set_current_stream(device, stream)) {}
  ~StreamGuard() { set_current_stream(device_, prev_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_;
  cudaStream_t prev_;
};

// An owned non-blocking stream. Destruction waits for the stream's work
// before destroying it: blocks cached for this handle are then idle, and a
// later stream that happens to get the same handle value cannot overlap them.
class Stream {
 public:
  explicit Stream(int device, int priority = 0);
  ~Stream();
  Stream(Stream&& o) noexcept : device_(o.device_), stream_(o.stream_) { o.stream_ = nullptr; }
  Stream& operator=(Stream&& o) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }
  void synchronize() const;
  bool query() const;  // true when all its work has completed

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
};

// A CUDA event, created on the device of the stream it is first recorded on.
// An event never recorded counts as complete (waiting on it is a no-op).
class Event {
 public:
  explicit Event(bool enable_timing = false) : timing_(enable_timing) {}
  ~Event();
  Event(Event&& o) noexcept;
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // Captures the work enqueued on `stream` so far.
  void record(cudaStream_t stream);
  // Records on the current stream of `device`.
  void record_current(int device) { record(current_stream(device)); }
  // Makes `stream` wait (on the device, not the host) for the captured work.
  void wait(cudaStream_t stream) const;
  // Blocks the host until the captured work has completed.
  void synchronize() const;
  bool query() const;  // true when the captured work has completed
  // Milliseconds between this event and `end` (both recorded, with timing).
  float elapsed_ms(const Event& end) const;

  bool recorded() const { return event_ != nullptr; }
  int device() const { return device_; }
  cudaEvent_t handle() const { return event_; }

 private:
  bool timing_ = false;
  int device_ = -1;
  cudaEvent_t event_ = nullptr;
};

// Enqueues a copy of `nbytes` on `stream` without waiting for it. With pinned
// host memory (empty_pinned) the copy overlaps host work: the host side must
// not be read (device-to-host) or changed (host-to-device) until the stream
// has passed the copy (Event::synchronize). Pinned blocks are kept from
// reuse by keel's pinned allocator until the copy has completed. Pageable
// host memory makes CUDA itself synchronous here (staged host-to-device,
// blocking device-to-host). `stream` belongs to the device side (the
// destination's device for device-to-device). Ordering `stream` with the
// streams that produce or own the device memory is the caller's (Event,
// record_stream); keel::copy_bytes is the synchronous form that does it.
void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device,
                      size_t nbytes, cudaStream_t stream);

}  // namespace keel::cuda
