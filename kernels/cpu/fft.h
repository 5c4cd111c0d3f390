// keel's own FFT on the CPU, for power-of-two sizes: a Stockham autosort
// complex FFT with radix-4 stages (and one radix-2 stage when log2 n is odd)
// on split re/im arrays, and real transforms computed through a half-size
// complex FFT. Twiddles are computed in double once per size and cached
// (thread-safe; plans live for the life of the process). The butterflies
// get an AVX2 + FMA clone picked at load time where the CPU has them. This
// is the building block of the FFT long convolution (kernels/fftconv.h).
#pragma once

#include <cstdint>

namespace keel::kernels::fft {

// Largest supported size (complex or real); sizes must be powers of two.
inline constexpr int64_t kMaxSize = int64_t(1) << 24;

// In-place complex DFT of length n on split arrays re[n], im[n]:
//   X[k] = sum_j x[j] exp(-+2 pi i jk / n)   (- forward, + inverse)
// Unnormalised in both directions.
void c2c(int64_t n, float* re, float* im, bool inverse);

// Real DFT of x[n] -> bins 0..n/2 in re[n/2+1], im[n/2+1] (unnormalised).
void r2c(int64_t n, const float* x, float* re, float* im);

// Inverse of r2c: bins 0..n/2 -> x[n], scaled by 1/n so c2r(r2c(x)) == x.
// The imaginary parts of bins 0 and n/2 are ignored.
void c2r(int64_t n, const float* re, const float* im, float* x);

}  // namespace keel::kernels::fft
