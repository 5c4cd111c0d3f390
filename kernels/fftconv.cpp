// FFT long convolution launchers: validate, allocate, dispatch by device.
#include "kernels/fftconv.h"

#include "kernels/cpu/fft.h"
#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void fftconv(const Tensor& u, const Tensor& k, const Tensor& D, int64_t n, Tensor& y);
void fftconv_backward(const Tensor& u, const Tensor& k, const Tensor& D, const Tensor& dy,
                      int64_t n, Tensor* du, Tensor* dk, Tensor* dD);
}  // namespace cpu

namespace cuda {
void fftconv(const Tensor& u, const Tensor& k, const Tensor& D, int64_t n, Tensor& y);
void fftconv_backward(const Tensor& u, const Tensor& k, const Tensor& D, const Tensor& dy,
                      int64_t n, Tensor* du, Tensor* dk, Tensor* dD);
}  // namespace cuda

namespace {

void check_fftconv(const char* op, const Tensor& u, const Tensor& k, const Tensor& D) {
  KEEL_CHECK(u.dim() == 3, op, ": u must be (B, C, T), got ", u.describe());
  KEEL_CHECK(k.dim() == 2, op, ": k must be (C, L), got ", k.describe());
  KEEL_CHECK(k.size(0) == u.size(1), op, ": k ", k.shape_string(),
             " must have one filter per channel of u ", u.shape_string(), " (C = ", u.size(1), ")");
  KEEL_CHECK(k.size(1) >= 1 && k.size(1) <= u.size(2), op, ": k ", k.shape_string(),
             " must have 1 <= L <= T taps for u ", u.shape_string(), " (T = ", u.size(2), ")");
  check_floating(op, u, "u");
  KEEL_CHECK(k.dtype() == u.dtype(), op, ": dtypes differ (u ", u.describe(), ", k ", k.describe(),
             ")");
  if (D.defined()) {
    KEEL_CHECK(D.dim() == 1 && D.size(0) == u.size(1), op, ": D must be (C) = (", u.size(1),
               ") for u ", u.shape_string(), ", got ", D.shape_string());
    KEEL_CHECK(D.dtype() == u.dtype(), op, ": dtypes differ (u ", u.describe(), ", D ",
               D.describe(), ")");
  }
  check_devices(op, u.device(), {&k, &D});
  const int64_t n = fftconv_size(u.size(2), k.size(1));
  KEEL_CHECK(n <= fft::kMaxSize, op, ": u ", u.shape_string(), " with k ", k.shape_string(),
             " needs an FFT of ", n, " points, above the largest supported (", fft::kMaxSize, ")");
}

}  // namespace

int64_t fftconv_size(int64_t T, int64_t L) {
  int64_t n = 1;
  while (n < T + L - 1) n *= 2;
  return n;
}

Tensor fftconv(const Tensor& u, const Tensor& k, const Tensor& D) {
  check_fftconv("fftconv", u, k, D);
  const int64_t n = fftconv_size(u.size(2), k.size(1));
  Tensor y = empty(u.sizes(), u.dtype(), u.device());  // (B, C, T)
  if (y.numel() == 0) return y;
  on_device(
      "fftconv", u.device(), [&] { cpu::fftconv(u, k, D, n, y); },
      [&] { cuda::fftconv(u, k, D, n, y); });
  return y;
}

FftConvGrads fftconv_backward(const Tensor& u, const Tensor& k, const Tensor& dy, bool need_du,
                              bool need_dk, bool need_dD) {
  return fftconv_backward(u, k, dy, need_du, need_dk, need_dD, Tensor());
}

FftConvGrads fftconv_backward(const Tensor& u, const Tensor& k, const Tensor& dy, bool need_du,
                              bool need_dk, bool need_dD, const Tensor& D) {
  const char* op = "fftconv backward";
  check_fftconv(op, u, k, D);
  KEEL_CHECK(dy.sizes() == u.sizes(), op, ": dy ", dy.shape_string(), " must match u ",
             u.shape_string());
  KEEL_CHECK(dy.dtype() == u.dtype(), op, ": dtypes differ (u ", u.describe(), ", dy ",
             dy.describe(), ")");
  check_devices(op, u.device(), {&dy});
  const int64_t n = fftconv_size(u.size(2), k.size(1));
  const int64_t C = u.size(1);
  FftConvGrads out;
  if (need_du) out.du = empty(u.sizes(), u.dtype(), u.device());  // (B, C, T)
  if (need_dk) out.dk = empty(k.sizes(), k.dtype(), u.device());  // (C, L)
  if (need_dD) out.dD = empty({C}, u.dtype(), u.device());        // (C)
  if (!need_du && !need_dk && !need_dD) return out;
  if (u.numel() == 0) {
    // B = 0: empty du, zero parameter gradients.
    if (need_dk) out.dk = zeros(k.sizes(), k.dtype(), u.device());
    if (need_dD) out.dD = zeros({C}, u.dtype(), u.device());
    return out;
  }
  Tensor* du = need_du ? &out.du : nullptr;
  Tensor* dk = need_dk ? &out.dk : nullptr;
  Tensor* dD = need_dD ? &out.dD : nullptr;
  on_device(
      op, u.device(), [&] { cpu::fftconv_backward(u, k, D, dy, n, du, dk, dD); },
      [&] { cuda::fftconv_backward(u, k, D, dy, n, du, dk, dD); });
  return out;
}

}  // namespace keel::kernels
