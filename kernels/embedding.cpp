// Embedding launchers: validate shapes, dtypes and devices, allocate,
// dispatch by device. Id ranges are checked by the device kernel, which is
// where the ids can be read.
#include "kernels/embedding.h"

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void embedding(const Tensor& weight, const Tensor& ids, Tensor& out);
void embedding_backward(const Tensor& dout, const Tensor& ids, Tensor& dweight);
}  // namespace cpu

namespace cuda {
// Both check the ids on the device and synchronise the stream to report a
// bad one.
void embedding(const Tensor& weight, const Tensor& ids, Tensor& out);
void embedding_backward(const Tensor& dout, const Tensor& ids, Tensor& dweight);
}  // namespace cuda

namespace {
void check_ids(const char* op, const Tensor& ids) {
  KEEL_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, op,
             ": ids must be i32 or i64, got ", ids.describe());
}
}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  const char* op = "embedding";
  KEEL_CHECK(weight.dim() == 2, op, ": weight must be (V, C), got ", weight.describe());
  check_floating(op, weight, "weight");
  check_ids(op, ids);
  check_same_device(weight, ids, op);
  Shape s = ids.sizes();
  s.push_back(weight.size(1));
  Tensor out = empty(s, weight.dtype(), weight.device());  // (ids..., C)
  on_device(
      op, weight.device(), [&] { cpu::embedding(weight, ids, out); },
      [&] { cuda::embedding(weight, ids, out); });
  return out;
}

void embedding_backward(const Tensor& dout, const Tensor& ids, Tensor& dweight) {
  const char* op = "embedding_backward";
  KEEL_CHECK(dweight.dim() == 2, op, ": dweight must be (V, C), got ", dweight.describe());
  check_floating(op, dweight, "dweight");
  check_ids(op, ids);
  check_devices(op, dweight.device(), {&dout, &ids});
  Shape s = ids.sizes();
  s.push_back(dweight.size(1));
  KEEL_CHECK(dout.sizes() == s && dout.dtype() == dweight.dtype(), op, ": dout ", dout.describe(),
             " should be ", dtype_name(dweight.dtype()), " ", shape_str(s), " for ids ",
             ids.describe(), " and dweight ", dweight.describe());
  for (int64_t d = 0; d < 2; ++d)
    KEEL_CHECK(dweight.stride(d) != 0 || dweight.size(d) <= 1, op, ": dweight ", dweight.describe(),
               " is a broadcast view; its rows would alias");
  on_device(
      op, dweight.device(), [&] { cpu::embedding_backward(dout, ids, dweight); },
      [&] { cuda::embedding_backward(dout, ids, dweight); });
}

}  // namespace keel::kernels
