// Attention launchers: validate, allocate, dispatch by device.
#include "kernels/attention.h"

#include <cmath>

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, float scale,
                       AttentionBlocks blocks, Tensor& out, Tensor& lse);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& dout, const Tensor& lse, const Tensor& dlse, bool causal,
                        float scale, AttentionBlocks blocks, Tensor& dq, Tensor& dk, Tensor& dv);
void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_blk, const Tensor& lse_blk);
}  // namespace cpu

namespace cuda {
// kernels/cuda/attention.cu. out contiguous in q's dtype, lse f32; D > 256
// is a keel::Error.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, float scale,
                       Tensor& out, Tensor& lse);
// Merges the attention over k, v into the running f32 pair (out, lse).
void attention_forward_accumulate(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                  float scale, Tensor& out, Tensor& lse);
// dout in q's dtype, lse and dlse contiguous f32; writes every element of
// dq, dk, dv (contiguous, q's dtype) without atomics.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& dout, const Tensor& lse, const Tensor& dlse, bool causal,
                        float scale, Tensor& dq, Tensor& dk, Tensor& dv);
void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_blk, const Tensor& lse_blk);
}  // namespace cuda

namespace {

void check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  KEEL_CHECK(q.dim() == 4, op, ": q must be (B, H, Tq, D), got ", q.describe());
  KEEL_CHECK(k.dim() == 4, op, ": k must be (B, H, Tk, D), got ", k.describe());
  KEEL_CHECK(v.dim() == 4, op, ": v must be (B, H, Tk, D), got ", v.describe());
  KEEL_CHECK(k.sizes() == v.sizes(), op, ": k ", k.shape_string(), " and v ", v.shape_string(),
             " must have the same shape (B, H, Tk, D)");
  KEEL_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3), op, ": q ",
             q.shape_string(), " and k ", k.shape_string(),
             " must agree in B, H and D (q is (B, H, Tq, D), k is (B, H, Tk, D))");
  check_floating(op, q, "q");
  KEEL_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(), op, ": dtypes differ (q ",
             q.describe(), ", k ", k.describe(), ", v ", v.describe(), ")");
  check_devices(op, q.device(), {&k, &v});
  KEEL_CHECK(q.size(3) > 0, op, ": head dim D must be positive, got q ", q.shape_string());
  KEEL_CHECK(q.size(2) == 0 || k.size(2) > 0, op, ": q ", q.shape_string(), " has queries but k ",
             k.shape_string(), " has no keys");
  KEEL_CHECK(!causal || q.size(2) <= k.size(2), op,
             ": causal attention aligns the ends of q and k, so it needs Tq <= Tk; got q ",
             q.shape_string(), " and k ", k.shape_string());
}

void check_blocks(const char* op, AttentionBlocks blocks) {
  KEEL_CHECK(blocks.q > 0 && blocks.k > 0, op, ": block sizes must be positive, got q ", blocks.q,
             ", k ", blocks.k);
}

float resolve_scale(double scale, int64_t head_dim) {
  return scale > 0 ? float(scale) : float(1.0 / std::sqrt(double(head_dim)));
}

// (B, H, T) for a (B, H, T, D) tensor.
Shape row_shape(const Tensor& t) { return {t.size(0), t.size(1), t.size(2)}; }

}  // namespace

std::pair<Tensor, Tensor> attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                            bool causal, double scale, AttentionBlocks blocks) {
  check_qkv("attention", q, k, v, causal);
  check_blocks("attention", blocks);
  Tensor out = empty(q.sizes(), q.dtype(), q.device());      // (B, H, Tq, D)
  Tensor lse = empty(row_shape(q), DType::F32, q.device());  // (B, H, Tq)
  const float s = resolve_scale(scale, q.size(3));
  on_device(
      "attention", q.device(),
      [&] { cpu::attention_forward(q, k, v, causal, s, blocks, out, lse); },
      [&] { cuda::attention_forward(q, k, v, causal, s, out, lse); });
  return {out, lse};
}

AttentionGrads attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, const Tensor& dout,
                                  const Tensor& dlse, bool causal, double scale,
                                  AttentionBlocks blocks) {
  const char* op = "attention backward";
  check_qkv(op, q, k, v, causal);
  check_blocks(op, blocks);
  KEEL_CHECK(out.sizes() == q.sizes() && dout.sizes() == q.sizes(), op, ": out ",
             out.shape_string(), " and dout ", dout.shape_string(), " must match q ",
             q.shape_string());
  KEEL_CHECK(out.dtype() == q.dtype(), op, ": out ", out.describe(), " must have q's dtype (",
             dtype_name(q.dtype()), ")");
  check_floating(op, dout, "dout");
  KEEL_CHECK(lse.sizes() == row_shape(q) && lse.dtype() == DType::F32, op, ": lse must be f32 ",
             shape_str(row_shape(q)), " for q ", q.shape_string(), ", got ", lse.describe());
  KEEL_CHECK(!dlse.defined() || dlse.sizes() == row_shape(q), op, ": dlse ", dlse.describe(),
             " must be ", shape_str(row_shape(q)), " for q ", q.shape_string());
  if (dlse.defined()) check_floating(op, dlse, "dlse");
  check_devices(op, q.device(), {&out, &lse, &dout, &dlse});

  // The CPU kernel reads dout through q's element type; lse and dlse are
  // read as flat f32 rows. These are copies only in the unusual cases.
  Tensor g = dout.dtype() == q.dtype() ? dout : dout.to(q.dtype());  // (B, H, Tq, D)
  Tensor lse_c = lse.contiguous();                                   // (B, H, Tq)
  Tensor dlse_c;                                                     // (B, H, Tq) or undefined
  if (dlse.defined()) dlse_c = dlse.dtype() == DType::F32 ? dlse.contiguous() : dlse.to(DType::F32);

  const float s = resolve_scale(scale, q.size(3));
  Tensor dq, dk, dv;
  on_device(
      op, q.device(),
      [&] {
        // Gradients accumulate block by block in f32, then round once to q's dtype.
        dq = zeros(q.sizes(), DType::F32, q.device());  // (B, H, Tq, D)
        dk = zeros(k.sizes(), DType::F32, q.device());  // (B, H, Tk, D)
        dv = zeros(v.sizes(), DType::F32, q.device());  // (B, H, Tk, D)
        cpu::attention_backward(q, k, v, out, g, lse_c, dlse_c, causal, s, blocks, dq, dk, dv);
        if (q.dtype() != DType::F32) {
          dq = dq.to(q.dtype());
          dk = dk.to(q.dtype());
          dv = dv.to(q.dtype());
        }
      },
      [&] {
        // The kernels keep f32 accumulators in registers and write each
        // element once, already in q's dtype.
        dq = empty(q.sizes(), q.dtype(), q.device());  // (B, H, Tq, D)
        dk = empty(k.sizes(), q.dtype(), q.device());  // (B, H, Tk, D)
        dv = empty(v.sizes(), q.dtype(), q.device());  // (B, H, Tk, D)
        cuda::attention_backward(q, k, v, out, g, lse_c, dlse_c, causal, s, dq, dk, dv);
      });
  return {dq, dk, dv};
}

void attention_merge_(Tensor& out, Tensor& lse, const Tensor& out_blk, const Tensor& lse_blk) {
  const char* op = "attention_merge_";
  KEEL_CHECK(out.dim() == 4, op, ": out must be (B, H, T, D), got ", out.describe());
  KEEL_CHECK(out_blk.sizes() == out.sizes(), op, ": out_blk ", out_blk.shape_string(),
             " must match out ", out.shape_string());
  KEEL_CHECK(lse.sizes() == row_shape(out) && lse_blk.sizes() == row_shape(out), op, ": lse ",
             lse.shape_string(), " and lse_blk ", lse_blk.shape_string(), " must be ",
             shape_str(row_shape(out)), " for out ", out.shape_string());
  KEEL_CHECK(out.dtype() == DType::F32 && lse.dtype() == DType::F32, op,
             ": the running pair must be f32 (out ", out.describe(), ", lse ", lse.describe(), ")");
  KEEL_CHECK(lse_blk.dtype() == DType::F32, op, ": lse_blk must be f32, got ", lse_blk.describe());
  check_floating(op, out_blk, "out_blk");
  check_devices(op, out.device(), {&lse, &out_blk, &lse_blk});
  on_device(
      op, out.device(), [&] { cpu::attention_merge(out, lse, out_blk, lse_blk); },
      [&] { cuda::attention_merge(out, lse, out_blk, lse_blk); });
}

void attention_forward_accumulate_(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                   Tensor& out, Tensor& lse, double scale) {
  const char* op = "attention_forward_accumulate_";
  check_qkv(op, q, k, v, causal);
  KEEL_CHECK(out.defined() && out.sizes() == q.sizes() && out.dtype() == DType::F32, op,
             ": the running out must be f32 ", q.shape_string(), " for q ", q.shape_string(),
             ", got ", out.defined() ? out.describe() : std::string("undefined"));
  KEEL_CHECK(lse.defined() && lse.sizes() == row_shape(q) && lse.dtype() == DType::F32, op,
             ": the running lse must be f32 ", shape_str(row_shape(q)), " for q ", q.shape_string(),
             ", got ", lse.defined() ? lse.describe() : std::string("undefined"));
  check_devices(op, q.device(), {&out, &lse});
  const float s = resolve_scale(scale, q.size(3));
  on_device(
      op, q.device(),
      [&] {
        // The block's output stays f32 until it is merged: half inputs are
        // widened (exactly) so the CPU forward writes f32, as the CUDA
        // kernel's registers hold it.
        auto f32 = [](const Tensor& t) { return t.dtype() == DType::F32 ? t : t.to(DType::F32); };
        Tensor blk = empty(q.sizes(), DType::F32, q.device());         // (B, H, Tq, D)
        Tensor blk_lse = empty(row_shape(q), DType::F32, q.device());  // (B, H, Tq)
        cpu::attention_forward(f32(q), f32(k), f32(v), causal, s, AttentionBlocks{}, blk, blk_lse);
        cpu::attention_merge(out, lse, blk, blk_lse);
      },
      [&] { cuda::attention_forward_accumulate(q, k, v, causal, s, out, lse); });
}

}  // namespace keel::kernels
