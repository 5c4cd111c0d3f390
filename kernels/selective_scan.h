// Mamba-1's selective scan: a diagonal linear recurrence per (batch, channel)
// whose step size dt, input map B and output map C depend on the input.
//
//   dt_t = delta_t + delta_bias            (then softplus(dt_t) if delta_softplus)
//   x_t  = exp(dt_t A) ⊙ x_{t-1} + dt_t B_t u_t     x_{-1} = h0 (or 0), x (N) per (b, d)
//   y_t  = <C_t, x_t> + D u_t              (then y_t · SiLU(z_t) if z is given)
//
// with u, delta, z (B, D, T), A (D, N) real, B, C (B, N, T) shared by all
// channels, D and delta_bias (D), h0 (B, D, N). The arithmetic is f32; the
// (B, D, T, N) states are never stored: the forward keeps only the state at
// the start of every chunk of `chunk` steps, and the backward recomputes a
// chunk's states from it. Sums over T of the parameter gradients run in
// f64 per (b, d); every reduction over B or D (dA, dB, dC, dD, ddelta_bias)
// runs in a fixed order that depends on neither the thread count nor the
// chunk size, so the gradients are the same bit for bit for any of them.
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

struct SelectiveScanArgs {
  Tensor u, delta, A, B, C;     // required
  Tensor D, z, delta_bias, h0;  // optional (undefined = absent)
  bool delta_softplus = false;
};

// y (B, D, T) in u's dtype; last_state (B, D, N) f32, always returned.
struct SelectiveScanOut {
  Tensor y;
  Tensor last_state;
};

// Largest state size N the kernels accept (the CPU keeps a state on the stack).
inline constexpr int64_t kSelectiveScanMaxN = 256;
// Steps per chunk between saved states, unless a caller picks another.
inline constexpr int64_t kSelectiveScanChunk = 128;

SelectiveScanOut selective_scan(const SelectiveScanArgs& a);

// The same, also returning in *chunk_states (B, D, ceil(T / chunk), N) f32
// the state entering each chunk of `chunk` steps (x_{c*chunk - 1}; h0 or 0
// for c = 0): what the backward below recomputes the chunk's states from.
SelectiveScanOut selective_scan(const SelectiveScanArgs& a, Tensor* chunk_states, int64_t chunk);

// Gradients of every defined input (the rest undefined), each in its input's
// dtype: du, ddelta, dz (B, D, T); dA (D, N); dB, dC (B, N, T); dD,
// ddelta_bias (D); dh0 (B, D, N).
struct SelectiveScanGrads {
  Tensor du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dh0;
};

// dy (B, D, T); dlast (B, D, N) f32 or undefined: the gradient flowing into
// last_state. Reruns the forward's state recursion once to find the chunk
// states, then the chunked backward.
SelectiveScanGrads selective_scan_backward(const SelectiveScanArgs& a, const Tensor& dy,
                                           const Tensor& dlast);
// The same with chunks of `chunk` steps (any chunk gives the same bits).
SelectiveScanGrads selective_scan_backward(const SelectiveScanArgs& a, const Tensor& dy,
                                           const Tensor& dlast, int64_t chunk);
// The same from chunk states saved by the forward with the same `chunk`.
SelectiveScanGrads selective_scan_backward(const SelectiveScanArgs& a, const Tensor& dy,
                                           const Tensor& dlast, const Tensor& chunk_states,
                                           int64_t chunk);

}  // namespace keel::kernels
