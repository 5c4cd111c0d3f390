// Data-movement kernels for core (declared in core/cuda/copy.h). Copies pick
// the cheapest form their operands allow:
//   - dense, same dtype: bytes, 16 per load and store (cudaMemcpyAsync when
//     the two pointers sit at different offsets from a 16-byte boundary);
//   - dense, converting: one element per thread step;
//   - strided or broadcast: dims that are contiguous in both operands are
//     merged first, then each element's offsets come from its row-major
//     index (32-bit index math when the tensor is small enough).
// Values match the CPU path exactly: conversions mirror core/dtype.h and
// core/scalar_cast.h (core/cuda/convert.cuh), arange computes in double
// without fused multiply-adds, and normal draws use core/cuda/philox_exact.h.
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstring>
#include <mutex>

#include "core/cuda/check.h"
#include "core/cuda/convert.cuh"
#include "core/cuda/copy.h"
#include "core/cuda/launch.cuh"
#include "core/cuda/philox_exact.h"
#include "core/cuda/stream.h"
#include "core/scalar_cast.h"

namespace keel::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxDevices = 64;

// Blocks for a grid-stride loop over `work` items: enough to fill the device
// several times over, no more than the work needs.
unsigned blocks_for(int64_t work, int device) { return grid_for(work, kThreads, device, 16); }

__device__ __forceinline__ int64_t thread_index() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t thread_stride() { return int64_t(gridDim.x) * blockDim.x; }

// ---- kernels ----------------------------------------------------------------------

// Dense bytes; dst and src share their offset from a 16-byte boundary, so
// after a head of single bytes both are aligned and move 16 bytes a step.
__global__ void copy_bytes_vec16_kernel(const char* __restrict__ src, char* __restrict__ dst,
                                        int64_t nbytes) {
  const int64_t tid = thread_index(), step = thread_stride();
  const int64_t head =
      std::min<int64_t>(nbytes, (16 - (reinterpret_cast<uintptr_t>(dst) & 15)) & 15);
  const int64_t n16 = (nbytes - head) / 16;
  for (int64_t i = tid; i < head; i += step) dst[i] = src[i];
  const uint4* s4 = reinterpret_cast<const uint4*>(src + head);
  uint4* d4 = reinterpret_cast<uint4*>(dst + head);
  for (int64_t i = tid; i < n16; i += step) d4[i] = s4[i];
  for (int64_t i = head + n16 * 16 + tid; i < nbytes; i += step) dst[i] = src[i];
}

template <typename D, typename S>
__global__ void convert_dense_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += thread_stride())
    dst[i] = ::keel::cuda::cast_value<D, S>(src[i]);
}

template <typename W, typename Idx>
__global__ void copy_strided_kernel(const W* __restrict__ src, W* __restrict__ dst, Layout<2> L,
                                    Idx n) {
  for (Idx i = Idx(thread_index()); i < n; i += Idx(thread_stride())) {
    int64_t off[2];
    layout_offsets<2, Idx>(L, i, off);
    dst[off[0]] = src[off[1]];
  }
}

template <typename D, typename S>
__global__ void convert_strided_kernel(const S* __restrict__ src, D* __restrict__ dst, Layout<2> L,
                                       int64_t n) {
  for (int64_t i = thread_index(); i < n; i += thread_stride()) {
    int64_t off[2];
    layout_offsets<2, int64_t>(L, i, off);
    dst[off[0]] = ::keel::cuda::cast_value<D, S>(src[off[1]]);
  }
}

// Dense fill: single elements up to the first 16-byte boundary, then a
// 16-byte pattern of the value, then the tail.
template <typename W>
__global__ void fill_dense_kernel(W* __restrict__ dst, int64_t n, W value, uint4 pattern) {
  constexpr int64_t kPer = 16 / int64_t(sizeof(W));
  const int64_t tid = thread_index(), step = thread_stride();
  const int64_t head = std::min<int64_t>(
      n, int64_t((16 - (reinterpret_cast<uintptr_t>(dst) & 15)) & 15) / int64_t(sizeof(W)));
  const int64_t packs = (n - head) / kPer;
  for (int64_t i = tid; i < head; i += step) dst[i] = value;
  uint4* d4 = reinterpret_cast<uint4*>(dst + head);
  for (int64_t i = tid; i < packs; i += step) d4[i] = pattern;
  for (int64_t i = head + packs * kPer + tid; i < n; i += step) dst[i] = value;
}

template <typename W, typename Idx>
__global__ void fill_strided_kernel(W* __restrict__ dst, Layout<1> L, Idx n, W value) {
  for (Idx i = Idx(thread_index()); i < n; i += Idx(thread_stride())) {
    int64_t off[1];
    layout_offsets<1, Idx>(L, i, off);
    dst[off[0]] = value;
  }
}

// As keel::from_double (core/scalar_cast.h) on the host.
template <typename T>
__device__ __forceinline__ T from_double_dev(double v) {
  if constexpr (std::is_same_v<T, uint8_t>)
    return static_cast<uint8_t>(static_cast<int32_t>(v));
  else if constexpr (std::is_integral_v<T>)
    return static_cast<T>(v);
  else
    return ::keel::cuda::store_f32<T>(static_cast<float>(v));
}

template <typename T>
__global__ void arange_kernel(T* __restrict__ dst, int64_t n, double start, double step) {
  for (int64_t i = thread_index(); i < n; i += thread_stride())
    dst[i] = from_double_dev<T>(__dadd_rn(start, __dmul_rn(double(i), step)));  // never fused
}

template <typename T>
__device__ __forceinline__ T store_draw(float v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return ::keel::cuda::store_f32<T>(v);
}

// One thread per Philox block of 4 elements: two Box-Muller pairs.
template <typename T>
__global__ void normal_kernel(T* __restrict__ dst, int64_t n, uint64_t seed, uint64_t offset,
                              const uint8_t* __restrict__ log_codes,
                              const uint8_t* __restrict__ sin_codes,
                              const uint8_t* __restrict__ cos_codes) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = thread_index(); b < blocks; b += thread_stride()) {
    const Philox4 r = philox_block(seed, offset, uint64_t(b));
#pragma unroll
    for (int p = 0; p < 4; p += 2) {
      const int64_t i = 4 * b + p;
      if (i >= n) break;
      const uint32_t w1 = r.v[p], w2 = r.v[p + 1];
      const float rad = box_muller_radius(w1, log_codes);
      double s, c;
      sincos(double(box_muller_angle(w2)), &s, &c);
      const unsigned k2 = w2 >> 8;
      dst[i] = store_draw<T>(mul_rn(rad, apply_libm_code(float(c), libm_code(cos_codes, k2))));
      if (i + 1 < n)
        dst[i + 1] =
            store_draw<T>(mul_rn(rad, apply_libm_code(float(s), libm_code(sin_codes, k2))));
    }
  }
}

template <typename T>
__global__ void uniform_kernel(T* __restrict__ dst, int64_t n, uint64_t seed, uint64_t offset,
                               float low, float span) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = thread_index(); b < blocks; b += thread_stride()) {
    const Philox4 r = philox_block(seed, offset, uint64_t(b));
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * b + lane;
      if (i >= n) break;
      // low + span * (1 - u), one rounding per operation as on the host.
      const float u = philox_uniform(r.v[lane]);
      dst[i] = store_draw<T>(__fadd_rn(low, __fmul_rn(span, __fsub_rn(1.0f, u))));
    }
  }
}

// ---- launch helpers -------------------------------------------------------------------

template <typename D, typename S>
void launch_convert_dense(const Tensor& src, Tensor& dst, int64_t n, int dev, cudaStream_t s) {
  convert_dense_kernel<D, S><<<blocks_for(n, dev), kThreads, 0, s>>>(
      static_cast<const S*>(src.raw_data()), static_cast<D*>(dst.raw_data()), n);
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <typename D, typename S>
void launch_convert_strided(const Tensor& src, Tensor& dst, const Layout<2>& L, int64_t n, int dev,
                            cudaStream_t s) {
  convert_strided_kernel<D, S><<<blocks_for(n, dev), kThreads, 0, s>>>(
      static_cast<const S*>(src.raw_data()), static_cast<D*>(dst.raw_data()), L, n);
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <typename W>
void launch_copy_strided(const Tensor& src, Tensor& dst, const Layout<2>& L, int64_t n, int dev,
                         cudaStream_t s) {
  const W* sp = static_cast<const W*>(src.raw_data());
  W* dp = static_cast<W*>(dst.raw_data());
  if (n <= int64_t(UINT32_MAX))  // 32-bit division in the index math
    copy_strided_kernel<W, uint32_t>
        <<<blocks_for(n, dev), kThreads, 0, s>>>(sp, dp, L, uint32_t(n));
  else
    copy_strided_kernel<W, int64_t><<<blocks_for(n, dev), kThreads, 0, s>>>(sp, dp, L, n);
  KEEL_CUDA_CHECK(cudaGetLastError());
}

template <typename W>
void launch_fill(Tensor& dst, const Layout<1>& L, int64_t n, uint64_t bits, int dev,
                 cudaStream_t s) {
  W value;
  std::memcpy(&value, &bits, sizeof(W));
  W* p = static_cast<W*>(dst.raw_data());
  if (L.ndim == 1 && L.strides[0][0] == 1) {
    uint4 pattern;
    W rep[16 / sizeof(W)];
    for (W& r : rep) r = value;
    std::memcpy(&pattern, rep, 16);
    fill_dense_kernel<W><<<blocks_for((n * int64_t(sizeof(W)) + 15) / 16, dev), kThreads, 0, s>>>(
        p, n, value, pattern);
  } else if (n <= int64_t(UINT32_MAX)) {
    fill_strided_kernel<W, uint32_t>
        <<<blocks_for(n, dev), kThreads, 0, s>>>(p, L, uint32_t(n), value);
  } else {
    fill_strided_kernel<W, int64_t><<<blocks_for(n, dev), kThreads, 0, s>>>(p, L, n, value);
  }
  KEEL_CUDA_CHECK(cudaGetLastError());
}

// The normal-draw corrections on one device, uploaded on first use and kept
// for the life of the process (12 MiB; not counted by the caching allocator).
struct DeviceCodes {
  const uint8_t* log;
  const uint8_t* sin;
  const uint8_t* cos;
};

const DeviceCodes* device_codes(int device) {
  static std::mutex mu;
  static DeviceCodes* per_device[kMaxDevices] = {};
  std::lock_guard<std::mutex> lock(mu);
  if (per_device[device]) return per_device[device];
  const LibmCodes& codes = host_libm_codes();
  if (!codes.exact) return nullptr;
  uint8_t* p = nullptr;
  KEEL_CUDA_CHECK(cudaMalloc(&p, 3 * kCodeBytes));
  cudaStream_t s = current_stream(device);
  // Pageable sources are staged before each call returns; kernels that read
  // the tables run later on the same stream.
  KEEL_CUDA_CHECK(cudaMemcpyAsync(p, codes.log.data(), kCodeBytes, cudaMemcpyHostToDevice, s));
  KEEL_CUDA_CHECK(
      cudaMemcpyAsync(p + kCodeBytes, codes.sin.data(), kCodeBytes, cudaMemcpyHostToDevice, s));
  KEEL_CUDA_CHECK(
      cudaMemcpyAsync(p + 2 * kCodeBytes, codes.cos.data(), kCodeBytes, cudaMemcpyHostToDevice, s));
  per_device[device] = new DeviceCodes{p, p + kCodeBytes, p + 2 * kCodeBytes};
  return per_device[device];
}

void check_device_tensor(const Tensor& t, const char* op) {
  KEEL_CHECK(t.device().is_cuda(), op, ": expected a CUDA tensor, got ", t.describe());
}

}  // namespace

// ---- launchers --------------------------------------------------------------------

void copy_tensor(Tensor& dst, const Tensor& src) {
  check_device_tensor(dst, "copy_");
  KEEL_CHECK(src.device() == dst.device(), "copy_: ", src.describe(), " and ", dst.describe(),
             " must be on one device for the CUDA copy kernel");
  KEEL_CHECK(
      src.dim() <= dst.dim() && broadcast_shapes(dst.sizes(), src.sizes(), "copy_") == dst.sizes(),
      "copy_: cannot copy ", src.describe(), " into ", dst.describe());
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int dev = dst.device().index;
  DeviceGuard guard(dev);
  cudaStream_t s = current_stream(dev);
  const Layout<2> L = make_layout<2>(
      dst.sizes(), std::array<Shape, 2>{dst.strides(), broadcast_strides(src, dst.sizes())});
  const bool dense = L.ndim == 1 && L.strides[0][0] == 1 && L.strides[1][0] == 1;
  if (src.dtype() == dst.dtype()) {
    if (dense) {
      const int64_t nbytes = n * int64_t(dst.element_size());
      const char* sp = static_cast<const char*>(src.raw_data());
      char* dp = static_cast<char*>(dst.raw_data());
      if (((reinterpret_cast<uintptr_t>(sp) ^ reinterpret_cast<uintptr_t>(dp)) & 15) == 0) {
        copy_bytes_vec16_kernel<<<blocks_for((nbytes + 15) / 16, dev), kThreads, 0, s>>>(sp, dp,
                                                                                         nbytes);
        KEEL_CUDA_CHECK(cudaGetLastError());
      } else {
        KEEL_CUDA_CHECK(cudaMemcpyAsync(dp, sp, size_t(nbytes), cudaMemcpyDeviceToDevice, s));
      }
      return;
    }
    dispatch_bits(dst.element_size(), [&](auto w) {
      launch_copy_strided<decltype(w)>(src, dst, L, n, dev, s);
    });
    return;
  }
  KEEL_DISPATCH_ALL(dst.dtype(), {
    using DstT = T;
    if (dense) {
      KEEL_DISPATCH_ALL(src.dtype(), launch_convert_dense<DstT, T>(src, dst, n, dev, s));
    } else {
      KEEL_DISPATCH_ALL(src.dtype(), launch_convert_strided<DstT, T>(src, dst, L, n, dev, s));
    }
  });
}

void fill_tensor(Tensor& dst, double value) {
  check_device_tensor(dst, "fill_");
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int dev = dst.device().index;
  DeviceGuard guard(dev);
  cudaStream_t s = current_stream(dev);
  // The value is converted once, on the host, exactly as the CPU fill does.
  uint64_t bits = 0;
  KEEL_DISPATCH_ALL(dst.dtype(), {
    const T v = from_double<T>(value);
    std::memcpy(&bits, &v, sizeof(T));
  });
  const Layout<1> L = make_layout<1>(dst.sizes(), std::array<Shape, 1>{dst.strides()});
  if (bits == 0 && L.ndim == 1 && L.strides[0][0] == 1) {  // all-zero bytes: a memset
    KEEL_CUDA_CHECK(cudaMemsetAsync(dst.raw_data(), 0, size_t(n) * dst.element_size(), s));
    return;
  }
  dispatch_bits(dst.element_size(),
                [&](auto w) { launch_fill<decltype(w)>(dst, L, n, bits, dev, s); });
}

void arange_fill(Tensor& dst, double start, double step) {
  check_device_tensor(dst, "arange");
  KEEL_CHECK(dst.dim() == 1 && dst.is_contiguous(),
             "arange: expected a 1-D contiguous output, got ", dst.describe());
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int dev = dst.device().index;
  DeviceGuard guard(dev);
  cudaStream_t s = current_stream(dev);
  KEEL_DISPATCH_ALL(dst.dtype(), {
    arange_kernel<T>
        <<<blocks_for(n, dev), kThreads, 0, s>>>(static_cast<T*>(dst.raw_data()), n, start, step);
    KEEL_CUDA_CHECK(cudaGetLastError());
  });
}

void randn_fill(Tensor& dst, uint64_t seed, uint64_t offset) {
  check_device_tensor(dst, "randn");
  KEEL_CHECK(is_floating(dst.dtype()) && dst.is_contiguous(),
             "randn: expected a contiguous floating output, got ", dst.describe());
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int dev = dst.device().index;
  DeviceGuard guard(dev);
  const DeviceCodes* codes = device_codes(dev);
  if (!codes) {
    // This host's libm is outside what the corrections describe
    // (philox_exact.h): draw on the host so the values still match.
    Tensor host = empty(dst.sizes(), DType::F32, Device::cpu());
    float* p = host.data<float>();
    for (int64_t i = 0; i < n; ++i) p[i] = philox_normal_at(seed, offset, uint64_t(i));
    dst.copy_(host);
    return;
  }
  cudaStream_t s = current_stream(dev);
  const unsigned grid = blocks_for((n + 3) / 4, dev);
  KEEL_DISPATCH_FLOAT(dst.dtype(), "randn", {
    normal_kernel<T><<<grid, kThreads, 0, s>>>(static_cast<T*>(dst.raw_data()), n, seed, offset,
                                               codes->log, codes->sin, codes->cos);
    KEEL_CUDA_CHECK(cudaGetLastError());
  });
}

void uniform_fill(Tensor& dst, uint64_t seed, uint64_t offset, float low, float span) {
  check_device_tensor(dst, "rand_uniform");
  KEEL_CHECK(is_floating(dst.dtype()) && dst.is_contiguous(),
             "rand_uniform: expected a contiguous floating output, got ", dst.describe());
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int dev = dst.device().index;
  DeviceGuard guard(dev);
  cudaStream_t s = current_stream(dev);
  const unsigned grid = blocks_for((n + 3) / 4, dev);
  KEEL_DISPATCH_FLOAT(dst.dtype(), "rand_uniform", {
    uniform_kernel<T>
        <<<grid, kThreads, 0, s>>>(static_cast<T*>(dst.raw_data()), n, seed, offset, low, span);
    KEEL_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace keel::cuda
