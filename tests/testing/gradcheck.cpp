#include "tests/testing/gradcheck.h"

#include <cmath>
#include <sstream>

namespace keel::testing {

Doubles to_doubles(const Tensor& t) {
  Tensor c = t.to(Device::cpu()).contiguous();
  Doubles out(size_t(c.numel()));
  if (c.dtype() == DType::I64) {
    auto v = c.to_vector<int64_t>();
    for (size_t i = 0; i < v.size(); ++i) out[i] = double(v[i]);
  } else {
    auto v = c.to_vector<float>();
    for (size_t i = 0; i < v.size(); ++i) out[i] = double(v[i]);
  }
  return out;
}

Tensor uniform(const Shape& shape, uint64_t seed, double lo, double hi, DType dtype) {
  Generator g(seed);
  return rand_uniform(shape, lo, hi, g, dtype);
}

Tensor leaf(const Shape& shape, uint64_t seed, double lo, double hi) {
  Tensor t = uniform(shape, seed, lo, hi);
  t.set_requires_grad(true);
  return t;
}

::testing::AssertionResult all_close(const Doubles& actual, const Doubles& expected, double rtol,
                                     double atol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " != expected " << expected.size();
  int bad = 0;
  std::ostringstream os;
  double worst = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    double a = actual[i], e = expected[i];
    bool ok = std::isnan(e) ? std::isnan(a)
                            : (!std::isnan(a) && std::fabs(a - e) <= atol + rtol * std::fabs(e));
    if (!ok) {
      if (bad < 8) os << "\n  [" << i << "] got " << a << ", expected " << e;
      worst = std::max(worst, std::fabs(a - e));
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << actual.size()
                                       << " elements differ (worst abs diff " << worst
                                       << ", rtol " << rtol << ", atol " << atol << "):"
                                       << os.str();
}

Tensor check_op(const KeelFn& f, const RefFn& ref, const std::vector<Tensor>& inputs,
                const Tolerance& tol) {
  std::vector<Doubles> xs;
  for (const Tensor& t : inputs) xs.push_back(to_doubles(t));
  for (const Tensor& t : inputs)
    if (t.requires_grad()) t.set_grad(Tensor());

  Tensor out = f(inputs);
  Doubles expected = ref(xs);
  EXPECT_TRUE(all_close(to_doubles(out), expected, tol.fwd_rtol, tol.fwd_atol)) << "forward";

  bool any = false;
  for (const Tensor& t : inputs) any = any || t.requires_grad();
  if (!any) return out;

  // loss = sum(out * w) with fixed random weights, so every output element matters.
  Tensor w = uniform(out.sizes(), 1234, 0.5, 1.5);
  Doubles wd = to_doubles(w);
  Tensor loss = sum(mul(out, w.to(out.dtype())));
  loss.backward();

  auto objective = [&](const std::vector<Doubles>& in) {
    Doubles y = ref(in);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * wd[i];
    return s;
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (!inputs[k].requires_grad()) continue;
    Tensor g = inputs[k].grad();
    EXPECT_TRUE(g.defined()) << "input " << k << " got no gradient";
    if (!g.defined()) continue;
    Doubles fd(xs[k].size());
    std::vector<Doubles> pert = xs;
    for (size_t j = 0; j < xs[k].size(); ++j) {
      double x0 = xs[k][j];
      double h = tol.eps * std::max(1.0, std::fabs(x0));
      pert[k][j] = x0 + h;
      double fp = objective(pert);
      pert[k][j] = x0 - h;
      double fm = objective(pert);
      pert[k][j] = x0;
      fd[j] = (fp - fm) / (2 * h);
    }
    EXPECT_TRUE(all_close(to_doubles(g), fd, tol.bwd_rtol, tol.bwd_atol))
        << "gradient of input " << k;
  }
  return out;
}

}  // namespace keel::testing
