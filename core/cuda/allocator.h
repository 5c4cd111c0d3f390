// keel's CUDA memory: the caching device allocator behind every CUDA tensor
// and the caching pinned host allocator behind empty_pinned(). Both use the
// logic in core/cuda/caching_pool.h; this header is their public face.
//
// The rule for streams: device memory is reused only on the stream that was
// current when it was allocated. A tensor whose memory is also used on
// another stream (a communication stream, a copy stream) must be noted with
// record_stream(t, stream) before it is freed, or that stream synchronised
// with the owning one (Event) before the tensor goes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "core/cuda/caching_pool.h"
#include "core/tensor.h"

namespace keel::cuda {

// Statistics of the device allocator for one device.
MemoryStats memory_stats(int device);
// Resets peak_allocated / peak_reserved to the current values.
void reset_peak_memory_stats(int device);
// Returns cached, wholly free segments to the CUDA driver (all devices when
// device < 0); returns the bytes released. Live tensors are untouched.
size_t empty_cache(int device = -1);

// The live device allocation containing `ptr` is also used on `stream`: when
// it is freed it returns to its free list only after `stream` has finished
// the work enqueued so far. Throws keel::Error if ptr is not keel's.
void note_stream_use(const void* ptr, cudaStream_t stream);
// The same for a CUDA tensor's storage.
void record_stream(const Tensor& t, cudaStream_t stream);

// Statistics of the pinned host allocator (device index 0 in the pool).
MemoryStats pinned_memory_stats();
// Returns cached pinned blocks to the driver; returns the bytes released.
size_t empty_pinned_cache();
// True when `ptr` lies inside a live block of keel's pinned allocator.
bool is_pinned(const void* ptr);

// Copies a dense tensor between host and device (or two devices) on
// `stream` without waiting: same dtype and shape, both contiguous. The
// ordering rules of copy_bytes_async (core/cuda/stream.h) apply.
void copy_async(Tensor& dst, const Tensor& src, cudaStream_t stream);

}  // namespace keel::cuda
