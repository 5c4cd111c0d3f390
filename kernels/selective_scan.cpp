// Selective scan launchers (kernels/selective_scan.h): validate, bring the
// operands to dense f32 (no copy when they already are), dispatch by device,
// and give the results back in the inputs' dtypes.
#include "kernels/selective_scan.h"

#include "kernels/dispatch.h"
#include "kernels/selective_scan_dense.h"

namespace keel::kernels {

namespace {

void check_same(const char* op, const Tensor& t, const char* name, const Shape& want,
                const char* layout, const Tensor& ref, const char* ref_name) {
  KEEL_CHECK(t.sizes() == want, op, ": ", name, " must be ", layout, " = ", shape_str(want),
             " for ", ref_name, " ", ref.shape_string(), ", got ", t.shape_string());
}

// Validates `a` and returns its sizes with dense f32 operands.
ScanDense densify(const char* op, const SelectiveScanArgs& a, int64_t chunk) {
  for (const auto& [t, name] :
       {std::pair{&a.u, "u"}, {&a.delta, "delta"}, {&a.A, "A"}, {&a.B, "B"}, {&a.C, "C"}})
    KEEL_CHECK(t->defined(), op, ": ", name, " is required");
  KEEL_CHECK(a.u.dim() == 3, op, ": u must be (B, D, T), got ", a.u.describe());
  KEEL_CHECK(a.A.dim() == 2, op, ": A must be (D, N), got ", a.A.describe());
  KEEL_CHECK(a.B.dim() == 3, op, ": B must be (B, N, T), got ", a.B.describe());
  KEEL_CHECK(a.C.dim() == 3, op, ": C must be (B, N, T), got ", a.C.describe());
  ScanDense s;
  s.batch = a.u.size(0), s.dim = a.u.size(1), s.len = a.u.size(2), s.nstate = a.A.size(1);
  s.softplus = a.delta_softplus;
  s.chunk = chunk;
  KEEL_CHECK(a.A.size(0) == s.dim, op, ": A ", a.A.shape_string(),
             " must have one row per channel of u ", a.u.shape_string(), " (D = ", s.dim, ")");
  KEEL_CHECK(s.nstate >= 1 && s.nstate <= kSelectiveScanMaxN, op, ": state size N = ", s.nstate,
             " (A ", a.A.shape_string(), ") must be in [1, ", kSelectiveScanMaxN, "]");
  KEEL_CHECK(chunk >= 1, op, ": chunk must be >= 1, got ", chunk);
  const Shape bdt = a.u.sizes(), bnt{s.batch, s.nstate, s.len}, d1{s.dim},
              bdn{s.batch, s.dim, s.nstate};
  check_same(op, a.delta, "delta", bdt, "(B, D, T)", a.u, "u");
  check_same(op, a.B, "B", bnt, "(B, N, T)", a.u, "u (B, D, T) and A (D, N)");
  check_same(op, a.C, "C", bnt, "(B, N, T)", a.u, "u (B, D, T) and A (D, N)");
  if (a.D.defined()) check_same(op, a.D, "D", d1, "(D)", a.u, "u");
  if (a.z.defined()) check_same(op, a.z, "z", bdt, "(B, D, T)", a.u, "u");
  if (a.delta_bias.defined()) check_same(op, a.delta_bias, "delta_bias", d1, "(D)", a.u, "u");
  if (a.h0.defined()) check_same(op, a.h0, "h0", bdn, "(B, D, N)", a.u, "u (B, D, T) and A (D, N)");
  for (const auto& [t, name] : {std::pair{&a.u, "u"},
                                {&a.delta, "delta"},
                                {&a.A, "A"},
                                {&a.B, "B"},
                                {&a.C, "C"},
                                {&a.D, "D"},
                                {&a.z, "z"},
                                {&a.delta_bias, "delta_bias"},
                                {&a.h0, "h0"}})
    if (t->defined()) check_floating(op, *t, name);
  check_devices(op, a.u.device(), {&a.delta, &a.A, &a.B, &a.C, &a.D, &a.z, &a.delta_bias, &a.h0});
  auto dense = [](const Tensor& t) {
    return t.defined() ? t.to(DType::F32).contiguous() : Tensor();
  };
  s.u = dense(a.u), s.delta = dense(a.delta), s.A = dense(a.A), s.B = dense(a.B);
  s.C = dense(a.C), s.D = dense(a.D), s.z = dense(a.z), s.delta_bias = dense(a.delta_bias);
  s.h0 = dense(a.h0);
  return s;
}

Tensor in_dtype(const Tensor& g, const Tensor& like) {
  return g.defined() ? g.to(like.dtype()) : Tensor();
}

SelectiveScanOut forward(const char* op, const SelectiveScanArgs& a, Tensor* states,
                         int64_t chunk) {
  ScanDense s = densify(op, a, chunk);
  const Device dev = a.u.device();
  SelectiveScanOut out;
  Tensor y = empty({s.batch, s.dim, s.len}, DType::F32, dev);           // (B, D, T)
  out.last_state = empty({s.batch, s.dim, s.nstate}, DType::F32, dev);  // (B, D, N)
  if (states) *states = empty({s.batch, s.dim, s.chunks(), s.nstate}, DType::F32, dev);
  on_device(
      op, dev, [&] { cpu::selective_scan(s, &y, out.last_state, states); },
      [&] { cuda::selective_scan(s, &y, out.last_state, states); });
  out.y = y.to(a.u.dtype());
  return out;
}

}  // namespace

SelectiveScanOut selective_scan(const SelectiveScanArgs& a) {
  return forward("selective_scan", a, nullptr, kSelectiveScanChunk);
}

SelectiveScanOut selective_scan(const SelectiveScanArgs& a, Tensor* chunk_states, int64_t chunk) {
  KEEL_CHECK(chunk_states != nullptr, "selective_scan: chunk_states must not be null");
  return forward("selective_scan", a, chunk_states, chunk);
}

SelectiveScanGrads selective_scan_backward(const SelectiveScanArgs& a, const Tensor& dy,
                                           const Tensor& dlast) {
  return selective_scan_backward(a, dy, dlast, kSelectiveScanChunk);
}

SelectiveScanGrads selective_scan_backward(const SelectiveScanArgs& a, const Tensor& dy,
                                           const Tensor& dlast, int64_t chunk) {
  const char* op = "selective_scan backward";
  ScanDense s = densify(op, a, chunk);
  const Device dev = a.u.device();
  Tensor last = empty({s.batch, s.dim, s.nstate}, DType::F32, dev);                // (B, D, N)
  Tensor states = empty({s.batch, s.dim, s.chunks(), s.nstate}, DType::F32, dev);  // (B, D, nc, N)
  on_device(
      op, dev, [&] { cpu::selective_scan(s, nullptr, last, &states); },
      [&] { cuda::selective_scan(s, nullptr, last, &states); });
  return selective_scan_backward(a, dy, dlast, states, chunk);
}

SelectiveScanGrads selective_scan_backward(const SelectiveScanArgs& a, const Tensor& dy,
                                           const Tensor& dlast, const Tensor& chunk_states,
                                           int64_t chunk) {
  const char* op = "selective_scan backward";
  ScanDense s = densify(op, a, chunk);
  const Device dev = a.u.device();
  KEEL_CHECK(dy.defined(), op, ": dy is required");
  check_same(op, dy, "dy", a.u.sizes(), "(B, D, T)", a.u, "u");
  check_floating(op, dy, "dy");
  const Shape bdn{s.batch, s.dim, s.nstate};
  if (dlast.defined()) {
    check_same(op, dlast, "dlast", bdn, "(B, D, N)", a.u, "u (B, D, T) and A (D, N)");
    check_floating(op, dlast, "dlast");
  }
  const Shape bdcn{s.batch, s.dim, s.chunks(), s.nstate};
  KEEL_CHECK(
      chunk_states.defined() && chunk_states.sizes() == bdcn && chunk_states.dtype() == DType::F32,
      op, ": chunk_states must be f32 (B, D, ceil(T / chunk), N) = ", shape_str(bdcn),
      " for chunk ", chunk, ", got ",
      chunk_states.defined() ? chunk_states.describe() : std::string("undefined"));
  check_devices(op, dev, {&dy, &dlast, &chunk_states});
  Tensor g_y = dy.to(DType::F32).contiguous();                                     // (B, D, T)
  Tensor g_last = dlast.defined() ? dlast.to(DType::F32).contiguous() : Tensor();  // (B, D, N)
  Tensor st = chunk_states.contiguous();

  ScanDenseGrads g;
  const Shape bdt = a.u.sizes(), bnt{s.batch, s.nstate, s.len}, d1{s.dim};
  g.du = empty(bdt, DType::F32, dev);                                      // (B, D, T)
  g.ddelta = empty(bdt, DType::F32, dev);                                  // (B, D, T)
  g.dA = empty(a.A.sizes(), DType::F32, dev);                              // (D, N)
  g.dB = empty(bnt, DType::F32, dev);                                      // (B, N, T)
  g.dC = empty(bnt, DType::F32, dev);                                      // (B, N, T)
  if (s.D.defined()) g.dD = empty(d1, DType::F32, dev);                    // (D)
  if (s.z.defined()) g.dz = empty(bdt, DType::F32, dev);                   // (B, D, T)
  if (s.delta_bias.defined()) g.ddelta_bias = empty(d1, DType::F32, dev);  // (D)
  if (s.h0.defined()) g.dh0 = empty(bdn, DType::F32, dev);                 // (B, D, N)
  on_device(
      op, dev, [&] { cpu::selective_scan_backward(s, g_y, g_last, st, g); },
      [&] { cuda::selective_scan_backward(s, g_y, g_last, st, g); });

  SelectiveScanGrads out;
  out.du = in_dtype(g.du, a.u), out.ddelta = in_dtype(g.ddelta, a.delta);
  out.dA = in_dtype(g.dA, a.A), out.dB = in_dtype(g.dB, a.B), out.dC = in_dtype(g.dC, a.C);
  out.dD = in_dtype(g.dD, a.D), out.dz = in_dtype(g.dz, a.z);
  out.ddelta_bias = in_dtype(g.ddelta_bias, a.delta_bias), out.dh0 = in_dtype(g.dh0, a.h0);
  return out;
}

}  // namespace keel::kernels
