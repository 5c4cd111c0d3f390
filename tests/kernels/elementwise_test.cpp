// Elementwise ops: forward against float64 references, backward against
// float64 finite differences, broadcasting, strided inputs, dtypes, errors.
#include "kernels/elementwise.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using testing::check_op;
using testing::Doubles;
using testing::leaf;
using testing::Tolerance;

struct UnaryCase {
  const char* name;
  Tensor (*op)(const Tensor&);
  double (*ref)(double);
  double lo, hi;
};

double gelu_ref(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh_ref(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}
double sigmoid_ref(double x) { return 1 / (1 + std::exp(-x)); }

const UnaryCase kUnary[] = {
    {"neg", neg, [](double x) { return -x; }, -2, 2},
    {"exp", exp, [](double x) { return std::exp(x); }, -2, 2},
    {"log", log, [](double x) { return std::log(x); }, 0.2, 3},
    {"sqrt", sqrt, [](double x) { return std::sqrt(x); }, 0.2, 3},
    {"rsqrt", rsqrt, [](double x) { return 1 / std::sqrt(x); }, 0.2, 3},
    {"tanh", tanh, [](double x) { return std::tanh(x); }, -2, 2},
    {"sigmoid", sigmoid, sigmoid_ref, -4, 4},
    {"silu", silu, [](double x) { return x * sigmoid_ref(x); }, -4, 4},
    {"softplus", softplus, [](double x) { return std::log1p(std::exp(x)); }, -4, 4},
    {"gelu", gelu, gelu_ref, -3, 3},
    {"gelu_tanh", gelu_tanh, gelu_tanh_ref, -3, 3},
    {"relu", relu, [](double x) { return x > 0 ? x : 0; }, -2, 2},
    {"abs", abs, [](double x) { return std::fabs(x); }, -2, 2},
    {"square", square, [](double x) { return x * x; }, -2, 2},
    {"sin", sin, [](double x) { return std::sin(x); }, -4, 4},
};

TEST(Elementwise, UnaryForwardAndBackward) {
  for (const UnaryCase& c : kUnary) {
    SCOPED_TRACE(c.name);
    Tensor x = leaf({3, 7}, 11, c.lo, c.hi);
    auto ref = [&](const std::vector<Doubles>& in) {
      Doubles y(in[0].size());
      for (size_t i = 0; i < y.size(); ++i) y[i] = c.ref(in[0][i]);
      return y;
    };
    // relu/abs are not differentiable at 0; uniform draws never hit it exactly.
    check_op([&](const std::vector<Tensor>& in) { return c.op(in[0]); }, ref, {x});
  }
}

TEST(Elementwise, UnaryOnStridedInput) {
  Tensor base = leaf({4, 6}, 3);
  Tensor x = base.transpose(0, 1);  // (6, 4), not contiguous
  Tensor y = kernels::unary(kernels::UnaryOp::Exp, x);
  Doubles xd = testing::to_doubles(x), yd = testing::to_doubles(y);
  for (size_t i = 0; i < xd.size(); ++i)
    EXPECT_NEAR(yd[i], std::exp(xd[i]), 1e-6 * std::exp(xd[i]));
}

struct BinaryCase {
  const char* name;
  Tensor (*op)(const Tensor&, const Tensor&);
  double (*ref)(double, double);
  double lo, hi;
};

const BinaryCase kBinary[] = {
    {"add", add, [](double a, double b) { return a + b; }, -2, 2},
    {"sub", sub, [](double a, double b) { return a - b; }, -2, 2},
    {"mul", mul, [](double a, double b) { return a * b; }, -2, 2},
    {"div", div, [](double a, double b) { return a / b; }, 0.5, 2},
    {"pow", pow, [](double a, double b) { return std::pow(a, b); }, 0.5, 2},
    {"maximum", maximum, [](double a, double b) { return a >= b ? a : b; }, -2, 2},
    {"minimum", minimum, [](double a, double b) { return a <= b ? a : b; }, -2, 2},
};

// Reference with NumPy broadcasting for shapes a (2,3,4) and b as given.
Doubles broadcast_ref(const Doubles& a, const Doubles& b, const Shape& bs,
                      double (*f)(double, double)) {
  Shape as{2, 3, 4};
  Shape bfull(3 - bs.size(), 1);
  bfull.insert(bfull.end(), bs.begin(), bs.end());
  Doubles out(24);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 4; ++k) {
        int64_t bi = (bfull[0] == 1 ? 0 : i) * bfull[1] * bfull[2] +
                     (bfull[1] == 1 ? 0 : j) * bfull[2] + (bfull[2] == 1 ? 0 : k);
        out[size_t((i * 3 + j) * 4 + k)] = f(a[size_t((i * 3 + j) * 4 + k)], b[size_t(bi)]);
      }
  return out;
}

TEST(Elementwise, BinaryWithBroadcasting) {
  const Shape b_shapes[] = {{2, 3, 4}, {4}, {3, 1}, {2, 1, 4}, {1}};
  for (const BinaryCase& c : kBinary) {
    for (const Shape& bs : b_shapes) {
      SCOPED_TRACE(std::string(c.name) + " b=" + shape_str(bs));
      Tensor a = leaf({2, 3, 4}, 5, c.lo, c.hi);
      Tensor b = leaf(bs, 6, c.lo, c.hi);
      auto ref = [&](const std::vector<Doubles>& in) {
        return broadcast_ref(in[0], in[1], bs, c.ref);
      };
      check_op([&](const std::vector<Tensor>& in) { return c.op(in[0], in[1]); }, ref, {a, b});
    }
  }
}

TEST(Elementwise, BinaryNonContiguousOperands) {
  Tensor base = testing::uniform({4, 3, 2}, 8);
  Tensor a = base.permute({2, 1, 0});  // (2, 3, 4) with strides (1, 2, 6)
  a.set_requires_grad(true);
  Tensor b = leaf({4}, 9);
  auto ref = [&](const std::vector<Doubles>& in) {
    return broadcast_ref(in[0], in[1], {4}, [](double x, double y) { return x * y; });
  };
  check_op([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, ref, {a, b});
  EXPECT_FALSE(a.is_contiguous());
}

TEST(Elementwise, ScalarOps) {
  Tensor x = leaf({5}, 4, 0.5, 2);
  auto f = [&](auto op, auto ref) {
    check_op([&](const std::vector<Tensor>& in) { return op(in[0]); },
             [&](const std::vector<Doubles>& in) {
               Doubles y(in[0].size());
               for (size_t i = 0; i < y.size(); ++i) y[i] = ref(in[0][i]);
               return y;
             },
             {x});
  };
  f([](const Tensor& t) { return t + 2.0; }, [](double v) { return v + 2; });
  f([](const Tensor& t) { return 3.0 - t; }, [](double v) { return 3 - v; });
  f([](const Tensor& t) { return t * -1.5; }, [](double v) { return -1.5 * v; });
  f([](const Tensor& t) { return t / 4.0; }, [](double v) { return v / 4; });
  f([](const Tensor& t) { return 2.0 / t; }, [](double v) { return 2 / v; });
  f([](const Tensor& t) { return pow(t, 2.5); }, [](double v) { return std::pow(v, 2.5); });
}

TEST(Elementwise, HalfPrecisionStorageComputesInF32) {
  Tensor a = testing::uniform({64}, 1, -2, 2).to(DType::BF16);
  Tensor b = testing::uniform({64}, 2, -2, 2).to(DType::BF16);
  Tensor y = add(a, b);
  EXPECT_EQ(y.dtype(), DType::BF16);
  Doubles ad = testing::to_doubles(a), bd = testing::to_doubles(b), yd = testing::to_doubles(y);
  for (size_t i = 0; i < yd.size(); ++i) {
    // One rounding of the exact f32 sum to bf16.
    float exact = float(ad[i] + bd[i]);
    EXPECT_EQ(yd[i], double(bf16_to_float(float_to_bf16(exact))));
  }
  Tensor h = exp(testing::uniform({64}, 3).to(DType::F16));
  EXPECT_EQ(h.dtype(), DType::F16);
  Doubles hd = testing::to_doubles(h);
  Doubles xd = testing::to_doubles(testing::uniform({64}, 3).to(DType::F16));
  for (size_t i = 0; i < hd.size(); ++i)
    EXPECT_NEAR(hd[i], std::exp(xd[i]), 2e-3 * std::exp(xd[i]));
}

TEST(Elementwise, LargeTensorsUseAllThreadsAndMatch) {
  // Big enough to go parallel and to split rows into chunks.
  Tensor a = testing::uniform({3, 100000}, 1);
  Tensor b = testing::uniform({100000}, 2);
  Doubles y = testing::to_doubles(mul(a, b));
  Doubles ad = testing::to_doubles(a), bd = testing::to_doubles(b);
  for (size_t i = 0; i < y.size(); ++i)
    ASSERT_EQ(y[i], double(float(ad[i]) * float(bd[i % 100000])));
}

TEST(Elementwise, BadInputsNameShapesAndDtypes) {
  EXPECT_KEEL_ERROR(add(zeros({2, 3}), zeros({4})), "add", "(2, 3)", "(4,)");
  EXPECT_KEEL_ERROR(mul(zeros({2}), zeros({2}, DType::BF16)), "mul", "f32", "bf16");
  EXPECT_KEEL_ERROR(exp(zeros({2}, DType::I64)), "exp", "i64");
}

}  // namespace
}  // namespace keel
