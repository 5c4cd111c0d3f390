// Element conversions in device code, bit for bit as core/dtype.h and
// core/scalar_cast.h do them on the host: bf16/f16 round to nearest even with
// the same NaN encodings, integers convert as the host compiler does for
// in-range values (out-of-range float -> int is undefined in C++; the device
// saturates). For .cu files; keel's own element types (keel::bf16, keel::f16)
// are plain 16-bit structs that device code can load and store.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/dtype.h"

namespace keel::cuda {

__device__ __forceinline__ float bf16_bits_to_float(uint16_t b) {
  return __uint_as_float(uint32_t(b) << 16);
}

__device__ __forceinline__ uint16_t float_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return uint16_t(u >> 16);
}

__device__ __forceinline__ float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      u = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  return __uint_as_float(u);
}

__device__ __forceinline__ uint16_t float_to_f16_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return uint16_t(sign | 0x7e00u);   // NaN
  if (absu >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow to inf
  if (absu < 0x38800000u) {                                  // subnormal or zero
    if (absu < 0x33000000u) return sign;
    const uint32_t exp = absu >> 23;
    const uint32_t man = (absu & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // 14..24
    uint32_t r = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = absu - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return uint16_t(sign | (r >> 13));
}

template <typename T>
__device__ __forceinline__ float load_f32(T x) {
  if constexpr (std::is_same_v<T, bf16>)
    return bf16_bits_to_float(x.bits);
  else if constexpr (std::is_same_v<T, f16>)
    return f16_bits_to_float(x.bits);
  else
    return static_cast<float>(x);
}

template <typename T>
__device__ __forceinline__ T store_f32(float x) {
  if constexpr (std::is_same_v<T, bf16>)
    return bf16{float_to_bf16_bits(x)};
  else if constexpr (std::is_same_v<T, f16>)
    return f16{float_to_f16_bits(x)};
  else if constexpr (std::is_same_v<T, uint8_t>)
    return static_cast<uint8_t>(static_cast<int32_t>(x));
  else
    return static_cast<T>(x);
}

// As keel::cast_value (core/scalar_cast.h).
template <typename D, typename S>
__device__ __forceinline__ D cast_value(S x) {
  constexpr bool s_int = std::is_integral_v<S>, d_int = std::is_integral_v<D>;
  if constexpr (std::is_same_v<D, S>)
    return x;
  else if constexpr (s_int && d_int)
    return static_cast<D>(x);
  else if constexpr (s_int)
    return ::keel::cuda::store_f32<D>(static_cast<float>(x));
  else if constexpr (d_int) {
    // The host converts float -> u8 through a 32-bit integer conversion;
    // do the same so in-range values agree.
    if constexpr (std::is_same_v<D, uint8_t>)
      return static_cast<uint8_t>(static_cast<int32_t>(::keel::cuda::load_f32(x)));
    else
      return static_cast<D>(::keel::cuda::load_f32(x));
  } else {
    return ::keel::cuda::store_f32<D>(::keel::cuda::load_f32(x));
  }
}

}  // namespace keel::cuda
