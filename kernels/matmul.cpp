// Matmul launchers: validate shapes, dtypes and devices, turn trans flags into
// transposed views (the CPU kernel folds those into BLAS flags), dispatch by
// device.
#include "kernels/matmul.h"

#include <atomic>
#include <climits>

#include "kernels/dispatch.h"
#include "kernels/elementwise.h"

namespace keel::kernels {

namespace cpu {
void gemm(const Tensor& a, const Tensor& b, Tensor& out, double alpha, double beta);
}  // namespace cpu
namespace cuda {  // kernels/cuda/matmul.cu
void gemm(const Tensor& a, const Tensor& b, Tensor& out, double alpha, double beta);
// x (R, K), w (N, K), bias (N), y (R, N) fresh: y = [gelu_tanh](x @ w^T + bias).
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool gelu,
            Tensor* pre_activation);
}  // namespace cuda

namespace {
std::atomic<bool> g_allow_tf32{false};
}  // namespace

void set_allow_tf32(bool allow) { g_allow_tf32.store(allow, std::memory_order_relaxed); }
bool allow_tf32() { return g_allow_tf32.load(std::memory_order_relaxed); }

namespace {

Shape batch_of(const Tensor& t) { return Shape(t.sizes().begin(), t.sizes().end() - 2); }

// NumPy promotion of 1-D operands: a (K) -> (1, K), b (K) -> (K, 1).
Tensor promote_lhs(const Tensor& a) { return a.dim() == 1 ? a.unsqueeze(0) : a; }
Tensor promote_rhs(const Tensor& b) { return b.dim() == 1 ? b.unsqueeze(1) : b; }

// Broadcast of two batch shapes; the error names the full operand shapes,
// which is what the caller knows.
Shape broadcast_batch(const char* op, const Tensor& a, const Tensor& b, const Shape& ab,
                      const Shape& bb) {
  const size_t n = std::max(ab.size(), bb.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - ab.size() ? 1 : ab[i - (n - ab.size())];
    int64_t db = i < n - bb.size() ? 1 : bb[i - (n - bb.size())];
    KEEL_CHECK(da == db || da == 1 || db == 1, op, ": batch dims of ", a.describe(), " and ",
               b.describe(), " cannot be broadcast together (", shape_str(ab), " vs ",
               shape_str(bb), ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

void check_blas_int(const char* op, int64_t m, int64_t n, int64_t k) {
  KEEL_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX, op, ": matrix dims (M ", m, ", N ", n,
             ", K ", k, ") exceed BLAS's 32-bit int");
}

}  // namespace

void gemm(const Tensor& a, const Tensor& b, Tensor& out, bool trans_a, bool trans_b, double alpha,
          double beta) {
  const char* op = "gemm";
  KEEL_CHECK(a.dim() >= 2 && b.dim() >= 2 && out.dim() >= 2, op,
             ": a, b and out need at least 2 dims, got a ", a.describe(), ", b ", b.describe(),
             ", out ", out.describe());
  check_floating(op, a, "a");
  KEEL_CHECK(a.dtype() == b.dtype() && a.dtype() == out.dtype(), op, ": dtypes differ (a ",
             a.describe(), ", b ", b.describe(), ", out ", out.describe(), ")");
  check_devices(op, out.device(), {&a, &b});
  Tensor opa = trans_a ? a.transpose(-2, -1) : a;  // a view: BLAS gets the Trans flag
  Tensor opb = trans_b ? b.transpose(-2, -1) : b;
  const int64_t m = opa.size(-2), k = opa.size(-1), n = opb.size(-1);
  KEEL_CHECK(opb.size(-2) == k, op, ": inner dims differ: op(a) ", opa.shape_string(),
             (trans_a ? " (a transposed)" : ""), " and op(b) ", opb.shape_string(),
             (trans_b ? " (b transposed)" : ""), " (", k, " vs ", opb.size(-2), ")");
  Shape want = broadcast_batch(op, a, b, batch_of(opa), batch_of(opb));
  want.push_back(m);
  want.push_back(n);
  KEEL_CHECK(out.sizes() == want, op, ": out ", out.describe(), " should be ", shape_str(want),
             " for op(a) ", opa.shape_string(), " and op(b) ", opb.shape_string());
  for (int64_t d = 0; d < out.dim(); ++d)
    KEEL_CHECK(out.stride(d) != 0 || out.size(d) <= 1, op, ": out ", out.describe(),
               " is a broadcast view (stride 0 on dim ", d, "); its results would overlap");
  KEEL_CHECK(out.storage() != a.storage() && out.storage() != b.storage(), op, ": out ",
             out.describe(), " shares memory with an input; BLAS needs them apart");
  check_blas_int(op, m, n, k);
  on_device(
      op, out.device(), [&] { cpu::gemm(opa, opb, out, alpha, beta); },
      [&] { cuda::gemm(opa, opb, out, alpha, beta); });
}

Shape matmul_shape(const Tensor& a, const Tensor& b) {
  KEEL_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both operands need at least 1 dim, got ",
             a.describe(), " and ", b.describe());
  Tensor a2 = promote_lhs(a), b2 = promote_rhs(b);
  KEEL_CHECK(a2.size(-1) == b2.size(-2), "matmul: inner dims differ: ", a.describe(), " @ ",
             b.describe(), " (", a2.size(-1), " vs ", b2.size(-2), ")");
  Shape s = broadcast_batch("matmul", a, b, batch_of(a2), batch_of(b2));
  if (a.dim() > 1) s.push_back(a2.size(-2));
  if (b.dim() > 1) s.push_back(b2.size(-1));
  return s;
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  Shape result = matmul_shape(a, b);
  check_same_device(a, b, "matmul");
  check_floating("matmul", a, "lhs");
  KEEL_CHECK(a.dtype() == b.dtype(), "matmul: dtypes differ (", a.describe(), " and ", b.describe(),
             ")");
  Tensor a2 = promote_lhs(a), b2 = promote_rhs(b);
  Shape full = broadcast_batch("matmul", a, b, batch_of(a2), batch_of(b2));
  full.push_back(a2.size(-2));
  full.push_back(b2.size(-1));
  Tensor out = empty(full, a.dtype(), a.device());  // (..., M, N)
  gemm(a2, b2, out);
  return out.view(result);  // drops the dims 1-D operands were promoted with
}

namespace {

void check_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  KEEL_CHECK(x.dim() >= 1 && w.dim() == 2, op, ": expected x (..., K) and w (N, K), got x ",
             x.describe(), " and w ", w.describe());
  check_floating(op, x, "x");
  const int64_t k = w.size(1), n = w.size(0);
  KEEL_CHECK(x.size(-1) == k, op, ": x ", x.describe(), " has ", x.size(-1), " features but w ",
             w.describe(), " expects ", k);
  KEEL_CHECK(x.dtype() == w.dtype(), op, ": dtypes differ (x ", x.describe(), ", w ", w.describe(),
             ")");
  check_same_device(x, w, op);
  if (bias.defined()) {
    KEEL_CHECK(bias.dim() == 1 && bias.size(0) == n && bias.dtype() == w.dtype(), op, ": bias ",
               bias.describe(), " should be ", dtype_name(w.dtype()), " (", n, ",) for w ",
               w.describe());
    check_same_device(bias, w, op);
  }
  check_blas_int(op, shape_numel(Shape(x.sizes().begin(), x.sizes().end() - 1)), n, k);
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_linear("linear", x, w, bias);
  const int64_t k = w.size(1), n = w.size(0);
  Shape lead(x.sizes().begin(), x.sizes().end() - 1);
  const int64_t rows = shape_numel(lead);
  Tensor x2 = x.reshape({rows, k});  // (R, K), a view unless x's leading dims are scattered
  Tensor y2 = empty({rows, n}, x.dtype(), x.device());  // (R, N)
  if (bias.defined()) {
    on_device(
        "linear", x.device(),
        [&] {
          y2.copy_(bias);  // the GEMM adds onto the broadcast bias (beta = 1)
          gemm(x2, w, y2, false, true, 1.0, 1.0);
        },
        [&] { cuda::linear(x2, w, bias, y2, false, nullptr); });  // bias in the epilogue
  } else {
    gemm(x2, w, y2, false, true, 1.0, 0.0);
  }
  Shape ys = lead;
  ys.push_back(n);
  return y2.view(ys);  // (..., N)
}

Tensor linear_bias_gelu(const Tensor& x, const Tensor& w, const Tensor& bias,
                        Tensor* pre_activation) {
  const char* op = "linear_bias_gelu";
  KEEL_CHECK(bias.defined(), op, ": needs a bias (use linear and unary(GeluTanh) without one)");
  check_linear(op, x, w, bias);
  const int64_t k = w.size(1), n = w.size(0);
  Shape ys(x.sizes().begin(), x.sizes().end() - 1);
  const int64_t rows = shape_numel(ys);
  ys.push_back(n);
  Tensor x2 = x.reshape({rows, k});  // (R, K)
  Tensor y2, pre2;                   // (R, N) each
  on_device(
      op, x.device(),
      [&] {
        pre2 = linear(x2, w, bias);
        y2 = unary(UnaryOp::GeluTanh, pre2);
      },
      [&] {
        y2 = empty({rows, n}, x.dtype(), x.device());
        cuda::linear(x2, w, bias, y2, true, pre_activation ? &pre2 : nullptr);
      });
  if (pre_activation) *pre_activation = pre2.view(ys);  // (..., N)
  return y2.view(ys);                                   // (..., N)
}

}  // namespace keel::kernels
