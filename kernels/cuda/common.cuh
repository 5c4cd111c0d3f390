// Shared pieces of keel's hand-written CUDA kernels (included by
// kernels/cuda/*.cu only): keel's storage dtypes mapped to CUDA's
// (__nv_bfloat16, __half) with f32 load/store, 16-byte packs for vectorised
// access, strided layouts passed to kernels by value, warp and block
// reductions in a fixed order (so results are deterministic), launch
// geometry, device scratch buffers and the stream every launch runs on.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>

#include "core/cuda/check.h"
#include "core/cuda/launch.cuh"
#include "core/cuda/stream.h"
#include "core/tensor.h"

namespace keel::kernels::cuda {

// ---- dtypes --------------------------------------------------------------------

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

// Round to nearest even, as keel's CPU float_to_bf16 / float_to_f16.
template <typename T>
__device__ __forceinline__ T from_f32(float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(x);
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(x);
  else
    return x;
}

// Binds T to the CUDA element type of a floating dtype.
#define KEEL_CUDA_DISPATCH_FLOAT(dtype, what, ...)                          \
  switch (dtype) {                                                          \
    case ::keel::DType::F32: {                                              \
      using T = float;                                                      \
      __VA_ARGS__;                                                          \
      break;                                                                \
    }                                                                       \
    case ::keel::DType::BF16: {                                             \
      using T = __nv_bfloat16;                                              \
      __VA_ARGS__;                                                          \
      break;                                                                \
    }                                                                       \
    case ::keel::DType::F16: {                                              \
      using T = __half;                                                     \
      __VA_ARGS__;                                                          \
      break;                                                                \
    }                                                                       \
    default:                                                                \
      KEEL_FAIL(what, ": expected a floating dtype (f32, bf16, f16), got ", \
                ::keel::dtype_name(dtype));                                 \
  }

// Binds I to the C++ type of an index dtype (i32 or i64).
#define KEEL_CUDA_DISPATCH_INDEX(dtype, what, ...)                                              \
  switch (dtype) {                                                                              \
    case ::keel::DType::I32: {                                                                  \
      using I = int32_t;                                                                        \
      __VA_ARGS__;                                                                              \
      break;                                                                                    \
    }                                                                                           \
    case ::keel::DType::I64: {                                                                  \
      using I = int64_t;                                                                        \
      __VA_ARGS__;                                                                              \
      break;                                                                                    \
    }                                                                                           \
    default:                                                                                    \
      KEEL_FAIL(what, ": expected an index dtype (i32, i64), got ", ::keel::dtype_name(dtype)); \
  }

template <typename T>
T* data_ptr(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

// ---- 16-byte packs ---------------------------------------------------------------

template <typename T>
struct alignas(16) Pack {
  static constexpr int kN = 16 / int(sizeof(T));
  T v[kN];
};

template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* p) {
  Pack<T> r;
  *reinterpret_cast<uint4*>(&r) = *reinterpret_cast<const uint4*>(p);
  return r;
}

template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& r) {
  *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&r);
}

__host__ __device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// Elements of a row before its first 16-byte boundary (at most n).
template <typename T>
__device__ __forceinline__ int64_t head_to_align(const T* p, int64_t n) {
  const int64_t h =
      int64_t((16u - (reinterpret_cast<uintptr_t>(p) & 15u)) & 15u) / int64_t(sizeof(T));
  return h < n ? h : n;
}

__device__ __forceinline__ bool same_alignment(const void* a, const void* b) {
  return ((reinterpret_cast<uintptr_t>(a) ^ reinterpret_cast<uintptr_t>(b)) & 15u) == 0;
}

// Calls f(i, x[i] as f32) for the elements i of a row of n that thread `tid`
// of `nthreads` owns. The elements up to the first 16-byte boundary go one at
// a time, then 16 bytes per load, then the tail; a row need not start aligned.
template <typename T, typename F>
__device__ __forceinline__ void for_row(const T* x, int64_t n, int tid, int nthreads, F&& f) {
  constexpr int kV = Pack<T>::kN;
  const int64_t head = head_to_align(x, n);
  for (int64_t i = tid; i < head; i += nthreads) f(i, to_f32(x[i]));
  const int64_t packs = (n - head) / kV;
  for (int64_t j = tid; j < packs; j += nthreads) {
    const int64_t i0 = head + j * kV;
    const Pack<T> p = load_pack(x + i0);
#pragma unroll
    for (int u = 0; u < kV; ++u) f(i0 + u, to_f32(p.v[u]));
  }
  for (int64_t i = head + packs * kV + tid; i < n; i += nthreads) f(i, to_f32(x[i]));
}

// y[i] = f(i, x[i] as f32) over a row; vectorised when x and y share their
// offset from a 16-byte boundary (as rows at one index of two tensors do).
template <typename T, typename F>
__device__ __forceinline__ void map_row(const T* x, T* y, int64_t n, int tid, int nthreads, F&& f) {
  constexpr int kV = Pack<T>::kN;
  const int64_t head = same_alignment(x, y) ? head_to_align(x, n) : n;
  for (int64_t i = tid; i < head; i += nthreads) y[i] = from_f32<T>(f(i, to_f32(x[i])));
  const int64_t packs = (n - head) / kV;
  for (int64_t j = tid; j < packs; j += nthreads) {
    const int64_t i0 = head + j * kV;
    const Pack<T> p = load_pack(x + i0);
    Pack<T> o;
#pragma unroll
    for (int u = 0; u < kV; ++u) o.v[u] = from_f32<T>(f(i0 + u, to_f32(p.v[u])));
    store_pack(y + i0, o);
  }
  for (int64_t i = head + packs * kV + tid; i < n; i += nthreads)
    y[i] = from_f32<T>(f(i, to_f32(x[i])));
}

// Two-input forms: f(i, a[i], b[i]), and y[i] = f(i, a[i], b[i]).
template <typename T, typename F>
__device__ __forceinline__ void for_row2(const T* a, const T* b, int64_t n, int tid, int nthreads,
                                         F&& f) {
  constexpr int kV = Pack<T>::kN;
  const int64_t head = same_alignment(a, b) ? head_to_align(a, n) : n;
  for (int64_t i = tid; i < head; i += nthreads) f(i, to_f32(a[i]), to_f32(b[i]));
  const int64_t packs = (n - head) / kV;
  for (int64_t j = tid; j < packs; j += nthreads) {
    const int64_t i0 = head + j * kV;
    const Pack<T> pa = load_pack(a + i0), pb = load_pack(b + i0);
#pragma unroll
    for (int u = 0; u < kV; ++u) f(i0 + u, to_f32(pa.v[u]), to_f32(pb.v[u]));
  }
  for (int64_t i = head + packs * kV + tid; i < n; i += nthreads) f(i, to_f32(a[i]), to_f32(b[i]));
}

template <typename T, typename F>
__device__ __forceinline__ void map_row2(const T* a, const T* b, T* y, int64_t n, int tid,
                                         int nthreads, F&& f) {
  constexpr int kV = Pack<T>::kN;
  const int64_t head = same_alignment(a, b) && same_alignment(a, y) ? head_to_align(a, n) : n;
  for (int64_t i = tid; i < head; i += nthreads)
    y[i] = from_f32<T>(f(i, to_f32(a[i]), to_f32(b[i])));
  const int64_t packs = (n - head) / kV;
  for (int64_t j = tid; j < packs; j += nthreads) {
    const int64_t i0 = head + j * kV;
    const Pack<T> pa = load_pack(a + i0), pb = load_pack(b + i0);
    Pack<T> o;
#pragma unroll
    for (int u = 0; u < kV; ++u) o.v[u] = from_f32<T>(f(i0 + u, to_f32(pa.v[u]), to_f32(pb.v[u])));
    store_pack(y + i0, o);
  }
  for (int64_t i = head + packs * kV + tid; i < n; i += nthreads)
    y[i] = from_f32<T>(f(i, to_f32(a[i]), to_f32(b[i])));
}

// ---- reductions ----------------------------------------------------------------------

struct SumOp {
  template <typename V>
  __device__ __forceinline__ V operator()(V a, V b) const {
    return a + b;
  }
};

__device__ __forceinline__ float shfl_xor(float v, int o) {
  return __shfl_xor_sync(0xffffffffu, v, o);
}
__device__ __forceinline__ double shfl_xor(double v, int o) {
  return __shfl_xor_sync(0xffffffffu, v, o);
}

// Butterfly over the warp: every lane ends with the same value, combined in
// the same order on every run.
template <typename V, typename Op>
__device__ __forceinline__ V warp_allreduce(V v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));  // structs: shfl_xor by ADL
  return v;
}

// All kThreads threads of the block get the result. `smem` holds kThreads/32
// values; warps' results are combined in warp order by every thread (a
// broadcast read, so no bank conflicts).
template <int kThreads, typename V, typename Op>
__device__ __forceinline__ V block_allreduce(V v, Op op, V* smem) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024);
  v = warp_allreduce(v, op);
  if constexpr (kThreads == 32) {
    return v;
  } else {
    constexpr int kWarps = kThreads / 32;
    __syncthreads();  // smem may still be read by a previous call
    if (threadIdx.x % 32 == 0) smem[threadIdx.x / 32] = v;
    __syncthreads();
    V r = smem[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) r = op(r, smem[w]);
    return r;
  }
}

// A row reduced by kRowThreads threads: a warp (several rows per block) or
// the whole block (one row per block). smem: kRowThreads / 32 values.
template <int kRowThreads, typename V, typename Op>
__device__ __forceinline__ V row_allreduce(V v, Op op, V* smem) {
  if constexpr (kRowThreads == 32)
    return warp_allreduce(v, op);
  else
    return block_allreduce<kRowThreads>(v, op, smem);
}

// ---- online softmax (softmax, cross-entropy) -------------------------------------------

// A running max and the sum of exp(x - max) over the elements seen.
struct MaxSum {
  float m, s;
};

__device__ __forceinline__ MaxSum shfl_xor(MaxSum v, int o) {
  return {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
}

// s * exp(m - to), with an empty part (s == 0, m == -inf) staying 0 rather
// than 0 * exp(NaN).
__device__ __forceinline__ float rescale(float s, float m, float to) {
  return s == 0.0f ? 0.0f : s * expf(m - to);
}

struct MergeMaxSum {
  __device__ __forceinline__ MaxSum operator()(MaxSum a, MaxSum b) const {
    const float m = fmaxf(a.m, b.m);
    return {m, rescale(a.s, a.m, m) + rescale(b.s, b.m, m)};
  }
};

__device__ __forceinline__ void online_add(MaxSum& st, float v) {
  const float m = fmaxf(st.m, v);  // fmaxf skips a NaN v; expf(v - m) below keeps it
  st.s = (m == st.m ? st.s : rescale(st.s, st.m, m)) + expf(v - m);
  st.m = m;
}

// ---- strided layouts -------------------------------------------------------------------

// Strided layouts (Layout, make_layout, layout_offsets), grid sizes and word
// dispatch come from core/cuda/launch.cuh, which core's copy kernels share.
using ::keel::cuda::dispatch_bits;
using ::keel::cuda::grid_for;
using ::keel::cuda::kMaxDims;
using ::keel::cuda::Layout;
using ::keel::cuda::layout_offsets;
using ::keel::cuda::make_layout;
using ::keel::cuda::sm_count;

// ---- launches -------------------------------------------------------------------------

// The stream keel's kernels run on for `t`'s device.
inline cudaStream_t stream_of(const Tensor& t) {
  return ::keel::cuda::current_stream(t.device().index);
}

// Uninitialised device scratch of `bytes` bytes on `device`, from keel's
// allocator; freed when the returned tensor goes (stream-ordered).
inline Tensor scratch(int64_t bytes, Device device) {
  return empty({std::max<int64_t>(bytes, 1)}, DType::U8, device);
}

// Copies `bytes` from device to host on `stream` and waits for them: the
// launchers that must report a value or an error to the host end here.
inline void read_back(void* host, const void* dev, size_t bytes, cudaStream_t stream) {
  KEEL_CUDA_CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream));
  KEEL_CUDA_CHECK(cudaStreamSynchronize(stream));
}

// Index range check on the device (kernels/cuda/index.cu): finds the first
// element of `index` (row-major) outside [0, bound) and throws keel::Error
// with the CPU path's message. Synchronises the stream to read the verdict.
void check_index_range(const char* op, const char* noun, const Tensor& index, int64_t bound,
                       const std::string& bound_desc);

}  // namespace keel::kernels::cuda
