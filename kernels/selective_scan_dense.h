// The selective scan's operands as the CPU and CUDA paths take them: dense
// (contiguous) f32 tensors on one device, sizes read off once. The launcher
// (kernels/selective_scan.cpp) builds this after validating the user's
// tensors, and converts the results back to the inputs' dtypes.
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

struct ScanDense {
  Tensor u, delta, A, B, C;     // (B, D, T), (B, D, T), (D, N), (B, N, T), (B, N, T)
  Tensor D, z, delta_bias, h0;  // (D), (B, D, T), (D), (B, D, N); undefined when absent
  bool softplus = false;
  int64_t batch = 0, dim = 0, len = 0, nstate = 0;  // B, D, T, N
  int64_t chunk = 0;                                // steps between saved states
  int64_t chunks() const { return (len + chunk - 1) / chunk; }
};

// All f32, dense; the optional ones are allocated by the launcher only when
// their input is present (dz, dD, ddelta_bias, dh0).
struct ScanDenseGrads {
  Tensor du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dh0;
};

namespace cpu {
// y (B, D, T) (undefined: only the states are wanted), last (B, D, N),
// states (B, D, chunks, N) or null.
void selective_scan(const ScanDense& s, Tensor* y, Tensor& last, Tensor* states);
// dy (B, D, T), dlast (B, D, N) or undefined, states from the forward.
void selective_scan_backward(const ScanDense& s, const Tensor& dy, const Tensor& dlast,
                             const Tensor& states, ScanDenseGrads& g);
}  // namespace cpu

namespace cuda {
void selective_scan(const ScanDense& s, Tensor* y, Tensor& last, Tensor* states);
void selective_scan_backward(const ScanDense& s, const Tensor& dy, const Tensor& dlast,
                             const Tensor& states, ScanDenseGrads& g);
}  // namespace cuda

}  // namespace keel::kernels
