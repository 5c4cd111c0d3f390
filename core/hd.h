// KEEL_HD marks small functions that host and device code share (element
// conversions, Philox): __host__ __device__ under nvcc, plain inline in the
// host compiler. Bit casts between float and uint32_t for them.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define KEEL_HD __host__ __device__ __forceinline__
#else
#define KEEL_HD inline
#endif

namespace keel {

KEEL_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

KEEL_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

}  // namespace keel
