// Element conversions in device code, bit for bit as core/scalar_cast.h does
// them on the host: bf16/f16 through core/dtype.h's KEEL_HD conversions (the
// same code on both), integers convert as the host compiler does for
// in-range values (out-of-range float -> int is undefined in C++; the device
// saturates). For .cu files; keel's own element types (keel::bf16, keel::f16)
// are plain 16-bit structs that device code can load and store.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/dtype.h"

namespace keel::cuda {

template <typename T>
__device__ __forceinline__ float load_f32(T x) {
  if constexpr (std::is_same_v<T, bf16>)
    return ::keel::bf16_to_float(x);
  else if constexpr (std::is_same_v<T, f16>)
    return ::keel::f16_to_float(x);
  else
    return static_cast<float>(x);
}

template <typename T>
__device__ __forceinline__ T store_f32(float x) {
  if constexpr (std::is_same_v<T, bf16>)
    return ::keel::float_to_bf16(x);
  else if constexpr (std::is_same_v<T, f16>)
    return ::keel::float_to_f16(x);
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
