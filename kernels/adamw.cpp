// AdamW and sum-of-squares launchers.
#include "kernels/adamw.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& hp);
double sum_squares(const Tensor& x);
}  // namespace cpu

namespace cuda {
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& hp);
void adamw_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                      const AdamWStep& hp);
// Read the result back to the host: synchronise the stream.
double sum_squares(const Tensor& x);
double sum_squares_multi(const std::vector<Tensor>& xs);
}  // namespace cuda

namespace {

void check_step(const char* op, const Tensor& param, const Tensor& grad, const Tensor& m,
                const Tensor& v, const AdamWStep& hp) {
  check_floating(op, param, "param");
  check_floating(op, grad, "grad");
  KEEL_CHECK(grad.sizes() == param.sizes() && m.sizes() == param.sizes() &&
                 v.sizes() == param.sizes(),
             op, ": shapes differ: param ", param.describe(), ", grad ", grad.describe(), ", m ",
             m.describe(), ", v ", v.describe());
  m.check_dtype(DType::F32, "adamw moment m");
  v.check_dtype(DType::F32, "adamw moment v");
  KEEL_CHECK(param.is_contiguous() && grad.is_contiguous() && m.is_contiguous() &&
                 v.is_contiguous(),
             op, ": param, grad and moments must be contiguous");
  KEEL_CHECK(hp.step >= 1, op, ": step must be >= 1, got ", hp.step);
  check_devices(op, param.device(), {&grad, &m, &v});
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& hp) {
  check_step("adamw", param, grad, m, v, hp);
  on_device(
      "adamw", param.device(), [&] { cpu::adamw_step(param, grad, m, v, hp); },
      [&] { cuda::adamw_step(param, grad, m, v, hp); });
}

void adamw_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                      const AdamWStep& hp) {
  const char* op = "adamw_step_multi";
  KEEL_CHECK(grads.size() == params.size() && m.size() == params.size() &&
                 v.size() == params.size(),
             op, ": ", params.size(), " params but ", grads.size(), " grads, ", m.size(),
             " m and ", v.size(), " v");
  if (params.empty()) return;
  const Device device = params[0].device();
  for (size_t i = 0; i < params.size(); ++i) {
    KEEL_CHECK(params[i].device() == device, op, ": param ", i, " (", params[i].describe(),
               ") is not on ", device.str(), " like param 0");
    check_step(op, params[i], grads[i], m[i], v[i], hp);
  }
  on_device(
      op, device,
      [&] {
        for (size_t i = 0; i < params.size(); ++i) {
          Tensor p = params[i], mi = m[i], vi = v[i];  // handles onto the same storage
          cpu::adamw_step(p, grads[i], mi, vi, hp);
        }
      },
      [&] { cuda::adamw_step_multi(params, grads, m, v, hp); });
}

double sum_squares(const Tensor& x) {
  check_floating("sum_squares", x, "input");
  Tensor c = x.contiguous();
  return on_device(
      "sum_squares", x.device(), [&] { return cpu::sum_squares(c); },
      [&] { return cuda::sum_squares(c); });
}

double sum_squares_multi(const std::vector<Tensor>& xs) {
  const char* op = "sum_squares_multi";
  if (xs.empty()) return 0.0;
  std::vector<Tensor> cs;  // contiguous handles
  for (size_t i = 0; i < xs.size(); ++i) {
    KEEL_CHECK(xs[i].defined(), op, ": tensor ", i, " is undefined");
    check_floating(op, xs[i], "input");
    KEEL_CHECK(xs[i].device() == xs[0].device(), op, ": tensor ", i, " (", xs[i].describe(),
               ") is not on ", xs[0].device().str(), " like tensor 0");
    cs.push_back(xs[i].contiguous());
  }
  return on_device(
      op, xs[0].device(),
      [&] {
        double total = 0;
        for (const Tensor& c : cs) total += cpu::sum_squares(c);
        return total;
      },
      [&] { return cuda::sum_squares_multi(cs); });
}

}  // namespace keel::kernels
