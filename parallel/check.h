// MPI and NCCL check macros, the same family as KEEL_CUDA_CHECK: a failure
// becomes a keel::Error naming the statement, the library's message,
// file:line and the rank.
#pragma once

#include <mpi.h>

#include "core/error.h"

namespace keel::detail {
inline std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return cat("MPI error ", code);
  return std::string(buf, size_t(len));
}
}  // namespace keel::detail

// MPI's default handler aborts; communicators keel creates set
// MPI_ERRORS_RETURN so that this macro sees the code.
#define KEEL_MPI_CHECK(stmt)                                                          \
  do {                                                                                \
    int keel_mpi_rc_ = (stmt);                                                        \
    if (keel_mpi_rc_ != MPI_SUCCESS) [[unlikely]]                                     \
      ::keel::detail::throw_error(__FILE__, __LINE__,                                 \
                                  ::keel::detail::cat(#stmt, " failed: ",             \
                                                      ::keel::detail::mpi_error_string(keel_mpi_rc_))); \
  } while (0)

#ifdef KEEL_WITH_NCCL
#include <nccl.h>
#define KEEL_NCCL_CHECK(stmt)                                                         \
  do {                                                                                \
    ncclResult_t keel_nccl_rc_ = (stmt);                                              \
    if (keel_nccl_rc_ != ncclSuccess) [[unlikely]]                                    \
      ::keel::detail::throw_error(__FILE__, __LINE__,                                 \
                                  ::keel::detail::cat(#stmt, " failed: ",             \
                                                      ncclGetErrorString(keel_nccl_rc_))); \
  } while (0)
#endif
