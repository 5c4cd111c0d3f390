// FFT long convolution, Hyena's long filter: every channel has its own
// filter of L taps (as long as the sequence at most), applied causally by
// zero padding to a power of two n >= T + L - 1, so the circular convolution
// of the padded rows equals the linear one on [0, T) and nothing wraps:
//   y = irfft(rfft(u, n) * rfft(k, n))[:T] + D * u
// Backward by FFT correlations (conj of a spectrum flips time):
//   du[t] = sum_s k[s] dy[t+s] + D dy[t] = irfft(conj(K) DY)[t] + D dy[t]
//   dk[s] = sum_b sum_t dy[t] u[t-s]     = irfft(sum_b conj(U) DY)[s],  s < L
//   dD    = sum_b sum_t dy[t] u[t]
// dy is padded with zeros beyond T as well, so t+s < T+L-1 <= n never wraps.
// u, k, D, dy may be strided views and f32, bf16 or f16 (one dtype for all);
// the arithmetic is f32, outputs come back in that dtype, and the sums over
// the batch are taken in a fixed order (f64), independent of the threads.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace keel::kernels {

// The FFT size for a sequence of T and a filter of L taps: the power of two
// >= T + L - 1.
int64_t fftconv_size(int64_t T, int64_t L);

// u (B, C, T), k (C, L) with 1 <= L <= T (the filter; taps beyond L are zero), D (C) or undefined
// -> y (B, C, T):
//   y[b,c,t] = sum_{s=0..min(t,L-1)} k[c,s] * u[b,c,t-s]  +  D[c] * u[b,c,t]
// computed as irfft(rfft(u, n) * rfft(k, n))[:T] + u*D with n = the power of two >= T + L - 1
// (causal by zero padding).
Tensor fftconv(const Tensor& u, const Tensor& k, const Tensor& D = Tensor());

struct FftConvGrads {
  Tensor du;  // (B, C, T)
  Tensor dk;  // (C, L)
  Tensor dD;  // (C)
};            // undefined unless asked for

// Gradients of fftconv(u, k) with no skip term (D = 0) given dy (B, C, T):
// du is the correlation part alone. dD = sum_{b,t} dy u does not depend on D.
FftConvGrads fftconv_backward(const Tensor& u, const Tensor& k, const Tensor& dy, bool need_du,
                              bool need_dk, bool need_dD);

// The same for fftconv(u, k, D): du gains D[c] dy[b,c,t], added in the pass
// that writes du (D undefined: as the overload above).
FftConvGrads fftconv_backward(const Tensor& u, const Tensor& k, const Tensor& dy, bool need_du,
                              bool need_dk, bool need_dD, const Tensor& D);

}  // namespace keel::kernels
