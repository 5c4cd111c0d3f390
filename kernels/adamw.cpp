// AdamW and sum-of-squares launchers.
#include "kernels/adamw.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& hp);
double sum_squares(const Tensor& x);
}  // namespace cpu

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& hp) {
  check_floating("adamw", param, "param");
  check_floating("adamw", grad, "grad");
  KEEL_CHECK(grad.sizes() == param.sizes() && m.sizes() == param.sizes() &&
                 v.sizes() == param.sizes(),
             "adamw: shapes differ: param ", param.describe(), ", grad ", grad.describe(),
             ", m ", m.describe(), ", v ", v.describe());
  m.check_dtype(DType::F32, "adamw moment m");
  v.check_dtype(DType::F32, "adamw moment v");
  KEEL_CHECK(param.is_contiguous() && grad.is_contiguous() && m.is_contiguous() &&
                 v.is_contiguous(),
             "adamw: param, grad and moments must be contiguous");
  KEEL_CHECK(hp.step >= 1, "adamw: step must be >= 1, got ", hp.step);
  check_devices("adamw", param.device(), {&grad, &m, &v});
  on_device("adamw", param.device(), [&] { cpu::adamw_step(param, grad, m, v, hp); });
}

double sum_squares(const Tensor& x) {
  check_floating("sum_squares", x, "input");
  Tensor c = x.contiguous();
  return on_device("sum_squares", x.device(), [&] { return cpu::sum_squares(c); });
}

}  // namespace keel::kernels
