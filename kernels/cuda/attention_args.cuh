// Kernel arguments shared by the CUDA attention kernels
// (kernels/cuda/attention_tc.cuh, attention_generic.cuh, attention.cu).
#pragma once

#include <cstdint>

namespace keel::kernels::cuda::attn {

// One (B, H, T, D) operand: element pointer and element strides. The
// tensor-core kernels need sd == 1 and 16-byte aligned rows; the generic
// ones read any strides.
struct Operand {
  void* p = nullptr;
  int64_t sb = 0, sh = 0, st = 0, sd = 1;

  template <typename T>
  __device__ __forceinline__ T* row(int b, int h, int64_t t) const {
    return static_cast<T*>(p) + b * sb + h * sh + t * st;
  }
};

// One (B, H, T) row statistic (lse): pointer and strides.
struct RowStat {
  float* p = nullptr;
  int64_t sb = 0, sh = 0, st = 0;

  __device__ __forceinline__ float& at(int b, int h, int64_t t) const {
    return p[b * sb + h * sh + t * st];
  }
};

struct ForwardArgs {
  Operand q, k, v;
  Operand out;  // q's dtype, or f32 when accumulating into a running pair
  RowStat lse;  // written; read first when accumulating
  int H, BH, Tq, Tk, D;
  int q_tiles;       // query tiles per (b, h)
  float scale;       // softmax scale
  float scale_log2;  // scale * log2(e): scores in base-2 units
};

struct BackwardArgs {
  Operand q, k, v, dout;  // dout in q's dtype
  Operand dq, dk, dv;     // contiguous, q's dtype
  const float* lse;       // (B, H, Tq) contiguous
  const float* delta;     // (B, H, Tq): rowsum(dout * out) - dlse
  int H, BH, Tq, Tk, D;
  int tiles;  // key tiles (dK/dV kernel) or query tiles (dQ kernel) per (b, h)
  float scale, scale_log2;
};

}  // namespace keel::kernels::cuda::attn
