// Cross-entropy launchers: validate shapes, dtypes and devices, make logits
// and targets contiguous (N, V) / (N), dispatch by device.
#include "kernels/cross_entropy.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
// logits (N, V), targets (N) contiguous; writes loss () and lse (N); returns
// the number of non-ignored rows. Throws keel::Error on a target out of range.
int64_t cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                      float smoothing, Tensor& loss, float* lse);
// dlogits (N, V) contiguous; scale = dloss / n_valid; shard.total resolved.
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const float* lse,
                            int64_t ignore_index, float smoothing, float scale,
                            const ClassShard& shard, Tensor& dlogits);
}  // namespace cpu

namespace cuda {
// As cpu::cross_entropy; synchronises the stream to read n_valid and to
// raise keel::Error for a target out of range.
int64_t cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                      float smoothing, Tensor& loss, float* lse);
// dloss is read on the device, so the backward does not synchronise.
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const float* lse,
                            int64_t ignore_index, float smoothing, const Tensor& dloss,
                            int64_t n_valid, const ClassShard& shard, Tensor& dlogits);
}  // namespace cuda

namespace {

constexpr const char* kOp = "cross_entropy";

Shape leading_shape(const Tensor& x) { return Shape(x.sizes().begin(), x.sizes().end() - 1); }

}  // namespace

void check_cross_entropy_inputs(const char* op, const Tensor& logits, const Tensor& targets,
                                double label_smoothing, const char* class_dim) {
  check_floating(op, logits, "logits");
  KEEL_CHECK(logits.dim() >= 1 && logits.size(-1) > 0, op, ": logits need a non-empty ", class_dim,
             " last, got ", logits.describe());
  KEEL_CHECK(targets.defined(), op, ": targets are undefined for logits ", logits.describe());
  KEEL_CHECK((targets.dtype() == DType::I32 || targets.dtype() == DType::I64) &&
                 targets.sizes() == leading_shape(logits),
             op, ": targets must be i32 or i64 of shape ", shape_str(leading_shape(logits)),
             " for logits ", logits.describe(), ", got ", targets.describe());
  check_devices(op, logits.device(), {&targets});
  KEEL_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op,
             ": label_smoothing must be in [0, 1], got ", label_smoothing);
}

CrossEntropyOut cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                              double label_smoothing) {
  check_cross_entropy_inputs(kOp, logits, targets, label_smoothing);
  const int64_t V = logits.size(-1), N = logits.numel() / V;
  Tensor lc = logits.contiguous().view({N, V});  // (N, V)
  Tensor tc = targets.contiguous().view({N});    // (N)
  CrossEntropyOut out;
  out.loss = zeros({}, DType::F32, logits.device());                    // ()
  out.lse = empty(leading_shape(logits), DType::F32, logits.device());  // (...)
  if (N == 0) return out;
  on_device(
      kOp, logits.device(),
      [&] {
        out.n_valid = cpu::cross_entropy(lc, tc, ignore_index, float(label_smoothing), out.loss,
                                         out.lse.data<float>());
      },
      [&] {
        out.n_valid = cuda::cross_entropy(lc, tc, ignore_index, float(label_smoothing), out.loss,
                                          out.lse.data<float>());
      });
  return out;
}

Tensor cross_entropy_backward(const Tensor& dloss, const Tensor& logits, const Tensor& targets,
                              const Tensor& lse, int64_t n_valid, int64_t ignore_index,
                              double label_smoothing, const ClassShard& shard) {
  const char* op = "cross_entropy backward";
  check_cross_entropy_inputs(op, logits, targets, label_smoothing);
  check_devices(op, logits.device(), {&dloss, &lse});
  KEEL_CHECK(dloss.numel() == 1 && is_floating(dloss.dtype()), op,
             ": the loss gradient must be one floating value, got ", dloss.describe());
  KEEL_CHECK(lse.dtype() == DType::F32 && lse.sizes() == leading_shape(logits), op,
             ": lse must be f32 ", shape_str(leading_shape(logits)), " for logits ",
             logits.describe(), ", got ", lse.describe());
  const int64_t V = logits.size(-1), N = logits.numel() / V;
  const ClassShard cs{shard.start, shard.total > 0 ? shard.total : V};
  KEEL_CHECK(cs.start >= 0 && cs.start + V <= cs.total, op, ": the ", V, " columns at class ",
             cs.start, " do not fit in ", cs.total, " classes");
  // With no valid row the loss is the constant 0, so its gradient is zero.
  if (N == 0 || n_valid == 0) return zeros(logits.sizes(), logits.dtype(), logits.device());
  // Every element is written, ignored rows with zeros.
  Tensor dlogits = empty(logits.sizes(), logits.dtype(), logits.device());  // (..., V)
  Tensor lc = logits.contiguous().view({N, V});                             // (N, V)
  Tensor tc = targets.contiguous().view({N});                               // (N)
  Tensor lsec = lse.contiguous();
  Tensor dv = dlogits.view({N, V});  // (N, V), shares dlogits' storage
  on_device(
      op, logits.device(),
      [&] {
        const float scale = float(dloss.item() / double(n_valid));
        cpu::cross_entropy_backward(lc, tc, lsec.data<float>(), ignore_index,
                                    float(label_smoothing), scale, cs, dv);
      },
      [&] {
        cuda::cross_entropy_backward(lc, tc, lsec.data<float>(), ignore_index,
                                     float(label_smoothing), dloss, n_valid, cs, dv);
      });
  return dlogits;
}

}  // namespace keel::kernels
