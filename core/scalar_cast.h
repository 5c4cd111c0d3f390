// Element conversion between keel's dtypes, and dtype dispatch helpers.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/dtype.h"
#include "core/error.h"

namespace keel {

template <typename T>
inline float load_f32(T x) {
  if constexpr (std::is_same_v<T, bf16>) return bf16_to_float(x);
  else if constexpr (std::is_same_v<T, f16>) return f16_to_float(x);
  else return static_cast<float>(x);
}

template <typename T>
inline T store_f32(float x) {
  if constexpr (std::is_same_v<T, bf16>) return float_to_bf16(x);
  else if constexpr (std::is_same_v<T, f16>) return float_to_f16(x);
  else return static_cast<T>(x);
}

template <typename D, typename S>
inline D cast_value(S x) {
  constexpr bool s_int = std::is_integral_v<S>, d_int = std::is_integral_v<D>;
  if constexpr (std::is_same_v<D, S>) return x;
  else if constexpr (s_int && d_int) return static_cast<D>(x);
  else if constexpr (s_int) return store_f32<D>(static_cast<float>(x));
  else if constexpr (d_int) return static_cast<D>(load_f32(x));
  else return store_f32<D>(load_f32(x));
}

template <typename T>
inline T from_double(double v) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(v);
  else return store_f32<T>(static_cast<float>(v));
}

template <typename T>
inline double to_double(T x) {
  if constexpr (std::is_integral_v<T>) return static_cast<double>(x);
  else return static_cast<double>(load_f32(x));
}

// KEEL_DISPATCH_ALL(dtype, T, ...) runs the body with T bound to the C++ type.
#define KEEL_DISPATCH_CASE(DT, TYPE, ...) \
  case DT: {                              \
    using T = TYPE;                       \
    __VA_ARGS__;                          \
    break;                                \
  }
#define KEEL_DISPATCH_ALL(dtype, ...)                                   \
  switch (dtype) {                                                      \
    KEEL_DISPATCH_CASE(::keel::DType::F32, float, __VA_ARGS__)          \
    KEEL_DISPATCH_CASE(::keel::DType::BF16, ::keel::bf16, __VA_ARGS__)  \
    KEEL_DISPATCH_CASE(::keel::DType::F16, ::keel::f16, __VA_ARGS__)    \
    KEEL_DISPATCH_CASE(::keel::DType::I32, int32_t, __VA_ARGS__)        \
    KEEL_DISPATCH_CASE(::keel::DType::I64, int64_t, __VA_ARGS__)        \
    KEEL_DISPATCH_CASE(::keel::DType::U8, uint8_t, __VA_ARGS__)         \
  }
#define KEEL_DISPATCH_FLOAT(dtype, what, ...)                                              \
  switch (dtype) {                                                                         \
    KEEL_DISPATCH_CASE(::keel::DType::F32, float, __VA_ARGS__)                             \
    KEEL_DISPATCH_CASE(::keel::DType::BF16, ::keel::bf16, __VA_ARGS__)                     \
    KEEL_DISPATCH_CASE(::keel::DType::F16, ::keel::f16, __VA_ARGS__)                       \
    default:                                                                               \
      KEEL_FAIL(what, ": expected a floating dtype (f32, bf16, f16), got ", dtype_name(dtype)); \
  }

}  // namespace keel
