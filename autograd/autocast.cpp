#include "autograd/autocast.h"

#include "autograd/ops.h"

namespace keel {

namespace {
thread_local DType g_compute = DType::F32;
}  // namespace

AutocastGuard::AutocastGuard(DType compute) : prev_(g_compute) {
  KEEL_CHECK(compute == DType::F32 || compute == DType::BF16 || compute == DType::F16,
             "AutocastGuard: compute dtype must be f32, bf16 or f16, got ", dtype_name(compute));
  g_compute = compute;
}

AutocastGuard::~AutocastGuard() { g_compute = prev_; }

DType autocast_dtype() { return g_compute; }

Tensor autocast(const Tensor& t) {
  if (g_compute == DType::F32 || !t.defined() || !is_floating(t.dtype()) ||
      t.dtype() == g_compute)
    return t;
  return to_dtype(t, g_compute);
}

}  // namespace keel
