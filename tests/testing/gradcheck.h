// Test helpers. check_op() runs one differentiable op three ways:
//   forward  : keel's f32 result against a plain float64 reference,
//   backward : keel's autograd gradients against central finite differences
//              of that float64 reference,
// each with stated tolerances. References take and return row-major doubles.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "autograd/ops.h"

namespace keel::testing {

using Doubles = std::vector<double>;
using KeelFn = std::function<Tensor(const std::vector<Tensor>&)>;
using RefFn = std::function<Doubles(const std::vector<Doubles>&)>;

struct Tolerance {
  double fwd_rtol = 1e-5, fwd_atol = 1e-6;  // f32 forward vs f64 reference
  double bwd_rtol = 1e-3, bwd_atol = 1e-4;  // f32 autograd vs f64 finite differences
  double eps = 1e-6;                        // finite-difference step (in f64)
};

// Row-major values of any tensor (any dtype, any strides) as doubles.
Doubles to_doubles(const Tensor& t);
// Deterministic test data: uniform in [lo, hi) from a Philox seed.
Tensor uniform(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0,
               DType dtype = DType::F32);
// A leaf that requires grad.
Tensor leaf(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0);

// Element-wise |a - b| <= atol + rtol * |b|, and no NaN in a unless b has one there.
::testing::AssertionResult all_close(const Doubles& actual, const Doubles& expected, double rtol,
                                     double atol);

// Runs the checks above. `inputs` are the tensors passed to `f` (views allowed);
// gradients are checked for those that require grad. Returns keel's output.
Tensor check_op(const KeelFn& f, const RefFn& ref, const std::vector<Tensor>& inputs,
                const Tolerance& tol = {});

// Asserts that `stmt` throws keel::Error whose message contains every needle.
#define EXPECT_KEEL_ERROR(stmt, ...)                                                    \
  do {                                                                                  \
    try {                                                                               \
      stmt;                                                                             \
      ADD_FAILURE() << "expected keel::Error from: " #stmt;                             \
    } catch (const ::keel::Error& e) {                                                  \
      for (const char* needle : {__VA_ARGS__})                                          \
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)                \
            << "message '" << e.what() << "' lacks '" << needle << "'";                 \
    }                                                                                   \
  } while (0)

}  // namespace keel::testing
