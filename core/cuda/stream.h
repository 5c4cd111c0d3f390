// The CUDA stream keel's kernels run on. Each device has a current stream
// (a non-blocking stream created on first use); launchers take it from here
// and never use the legacy default stream, so copies and kernels order
// among themselves and overlap with other streams (e.g. NCCL's).
#pragma once

#include <cuda_runtime.h>

namespace keel::cuda {

cudaStream_t current_stream(int device);
// Makes `stream` the current stream of `device` (e.g. a side stream for
// communication); returns the previous one.
cudaStream_t set_current_stream(int device, cudaStream_t stream);

}  // namespace keel::cuda
