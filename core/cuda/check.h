// CUDA and cuBLAS check macros: on failure, a keel::Error naming the
// statement, the error string, file:line, rank and device.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

namespace keel::detail {
[[noreturn]] void cuda_fail(const char* stmt, const char* err, const char* file, int line);
}

#define KEEL_CUDA_CHECK(stmt)                                                     \
  do {                                                                            \
    cudaError_t keel_err_ = (stmt);                                               \
    if (keel_err_ != cudaSuccess) [[unlikely]]                                    \
      ::keel::detail::cuda_fail(#stmt, cudaGetErrorString(keel_err_), __FILE__, __LINE__); \
  } while (0)

#define KEEL_CUBLAS_CHECK(stmt)                                                   \
  do {                                                                            \
    cublasStatus_t keel_st_ = (stmt);                                             \
    if (keel_st_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                           \
      ::keel::detail::cuda_fail(#stmt, cublasGetStatusString(keel_st_), __FILE__, __LINE__); \
  } while (0)
