// Differentiable FFT long convolution. The node saves u and k themselves
// (not their spectra): backward recomputes the spectra it needs, so the
// tape holds (B, C, T) + (C, L) values rather than (B, C, n/2+1) complex
// ones, and D only when the input gradient needs its skip term.
#include "kernels/fftconv.h"

#include "autograd/ops.h"

namespace keel {

Tensor fftconv(const Tensor& u, const Tensor& k, const Tensor& D) {
  Tensor y = kernels::fftconv(u, k, D);
  if (any_requires_grad({u, k, D})) {
    Tensor us = u.detach(), ks = k.detach(), Ds = D.defined() ? D.detach() : Tensor();
    record("fftconv", {u, k, D}, {y}, [us, ks, Ds](BackwardCtx& c) {
      // The kernel takes dy in u's dtype: a copy only if an upstream op changed it.
      const Tensor& dy = c.grad();
      Tensor gy = dy.dtype() == us.dtype() ? dy : dy.to(us.dtype());  // (B, C, T)
      kernels::FftConvGrads g =
          kernels::fftconv_backward(us, ks, gy, c.needs(0), c.needs(1), c.needs(2), Ds);
      return std::vector<Tensor>{g.du, g.dk, g.dD};
    });
  }
  return y;
}

}  // namespace keel
