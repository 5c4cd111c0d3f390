// Device dispatch for launchers. Every launcher validates its inputs, then
// runs the implementation for the tensors' device. A device without an
// implementation is an error: a CUDA tensor never falls back to the CPU.
//
// Launchers pass a CPU callable and, where a CUDA kernel exists, a CUDA
// callable. In a build without CUDA the CUDA callable is discarded unused,
// so it may name functions that are only defined in kernels/cuda/*.cu.
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

#ifdef KEEL_WITH_CUDA
inline constexpr bool kBuiltWithCuda = true;
#else
inline constexpr bool kBuiltWithCuda = false;
#endif

// Makes `device` current for the CUDA runtime (core/cuda/runtime.cu).
void set_cuda_device(Device device);

template <typename CpuFn>
decltype(auto) on_device(const char* op, Device device, CpuFn&& cpu) {
  if (device.is_cpu()) return cpu();
  KEEL_FAIL(op, ": no kernel for ", device.str(),
            " in this build (CUDA kernels arrive with the CUDA backend)");
}

template <typename CpuFn, typename CudaFn>
decltype(auto) on_device(const char* op, Device device, CpuFn&& cpu, CudaFn&& cuda) {
  if (device.is_cpu()) return cpu();
  if constexpr (kBuiltWithCuda) {
    set_cuda_device(device);
    return cuda();
  } else {
    KEEL_FAIL(op, ": ", device.str(), " requested but keel was built without CUDA");
  }
}

// Checks that every defined tensor is on `device`.
inline void check_devices(const char* op, Device device, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t && t->defined())
      KEEL_CHECK(t->device() == device, op, ": expected tensors on ", device.str(), ", got ",
                 t->describe());
}

// Checks that a tensor is floating point.
inline void check_floating(const char* op, const Tensor& t, const char* name) {
  KEEL_CHECK(is_floating(t.dtype()), op, ": ", name, " must be f32, bf16 or f16, got ",
             t.describe());
}

}  // namespace keel::kernels
