// Selective scan (Mamba-1): forward (y and last_state) against a plain
// sequential float64 scan, gradients of every input (h0 included, and
// through last_state) against float64 finite differences, over several T and
// every optional input; the chunked backward equal bit for bit for any chunk
// size and thread count; the forward's saved states against the backward's
// own; half-precision inputs; bad inputs refused with messages.
#include "kernels/selective_scan.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using kernels::SelectiveScanArgs;
using testing::Doubles;

struct Opts {
  bool D = false, z = false, bias = false, softplus = false, h0 = false;
};

struct Dims {
  int64_t B, D, T, N;
};

// The inputs in check_op's order: u, delta, A, B, C, then the present ones of D, z, bias, h0.
struct Layout {
  int iD = -1, iz = -1, ibias = -1, ih0 = -1;
  explicit Layout(const Opts& o) {
    int k = 5;
    if (o.D) iD = k++;
    if (o.z) iz = k++;
    if (o.bias) ibias = k++;
    if (o.h0) ih0 = k++;
  }
};

// Sequential scan in f64; returns y (B, D, T) followed by last_state (B, D, N).
Doubles scan_ref(const std::vector<Doubles>& in, const Dims& s, const Opts& o) {
  const Layout lay(o);
  const Doubles &u = in[0], &delta = in[1], &A = in[2], &Bm = in[3], &Cm = in[4];
  Doubles y(size_t(s.B * s.D * s.T)), last(size_t(s.B * s.D * s.N));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t d = 0; d < s.D; ++d) {
      std::vector<double> x(size_t(s.N), 0.0);
      if (o.h0)
        for (int64_t n = 0; n < s.N; ++n)
          x[size_t(n)] = in[size_t(lay.ih0)][size_t((b * s.D + d) * s.N + n)];
      for (int64_t t = 0; t < s.T; ++t) {
        const size_t i = size_t((b * s.D + d) * s.T + t);
        double dt = delta[i] + (o.bias ? in[size_t(lay.ibias)][size_t(d)] : 0.0);
        if (o.softplus) dt = dt > 30 ? dt : std::log1p(std::exp(dt));
        double acc = 0.0;
        for (int64_t n = 0; n < s.N; ++n) {
          const size_t j = size_t((b * s.N + n) * s.T + t);
          x[size_t(n)] = std::exp(dt * A[size_t(d * s.N + n)]) * x[size_t(n)] + dt * Bm[j] * u[i];
          acc += Cm[j] * x[size_t(n)];
        }
        if (o.D) acc += in[size_t(lay.iD)][size_t(d)] * u[i];
        if (o.z) {
          const double zv = in[size_t(lay.iz)][i];
          acc *= zv / (1.0 + std::exp(-zv));
        }
        y[i] = acc;
      }
      for (int64_t n = 0; n < s.N; ++n) last[size_t((b * s.D + d) * s.N + n)] = x[size_t(n)];
    }
  y.insert(y.end(), last.begin(), last.end());
  return y;
}

// Inputs for dims s: delta in [-1, 1] under softplus, else positive; A < 0
// for long sequences (a stable scan), else also some growth.
std::vector<Tensor> make_inputs(const Dims& s, const Opts& o, uint64_t seed, bool grad) {
  auto mk = [&](const Shape& sh, uint64_t k, double lo, double hi) {
    Tensor t = testing::uniform(sh, seed * 16 + k, lo, hi);
    t.set_requires_grad(grad);
    return t;
  };
  std::vector<Tensor> in{
      mk({s.B, s.D, s.T}, 0, -1, 1),
      o.softplus ? mk({s.B, s.D, s.T}, 1, -1, 1) : mk({s.B, s.D, s.T}, 1, 0.05, 0.6),
      mk({s.D, s.N}, 2, -1.0, s.T > 8 ? -0.05 : 0.5), mk({s.B, s.N, s.T}, 3, -1, 1),
      mk({s.B, s.N, s.T}, 4, -1, 1)};
  if (o.D) in.push_back(mk({s.D}, 5, -1, 1));
  if (o.z) in.push_back(mk({s.B, s.D, s.T}, 6, -2, 2));
  if (o.bias) in.push_back(mk({s.D}, 7, -0.5, 0.5));
  if (o.h0) in.push_back(mk({s.B, s.D, s.N}, 8, -1, 1));
  return in;
}

SelectiveScanArgs required(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                           const Tensor& C) {
  SelectiveScanArgs a;
  a.u = u, a.delta = delta, a.A = A, a.B = B, a.C = C;
  return a;
}

SelectiveScanArgs args_of(const std::vector<Tensor>& in, const Opts& o) {
  const Layout lay(o);
  SelectiveScanArgs a = required(in[0], in[1], in[2], in[3], in[4]);
  if (o.D) a.D = in[size_t(lay.iD)];
  if (o.z) a.z = in[size_t(lay.iz)];
  if (o.bias) a.delta_bias = in[size_t(lay.ibias)];
  if (o.h0) a.h0 = in[size_t(lay.ih0)];
  a.delta_softplus = o.softplus;
  return a;
}

void check_scan(const Dims& s, const Opts& o, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "B=" << s.B << " D=" << s.D << " T=" << s.T << " N=" << s.N
                                    << " Dskip=" << o.D << " z=" << o.z << " bias=" << o.bias
                                    << " softplus=" << o.softplus << " h0=" << o.h0);
  testing::Tolerance tol;
  // A T-step recurrence in f32: rounding grows with T (measured < 1e-5 at T = 1000).
  tol.fwd_rtol = s.T > 64 ? 1e-4 : 2e-5;
  tol.fwd_atol = s.T > 64 ? 2e-5 : 2e-6;
  testing::check_op(
      [&](const std::vector<Tensor>& in) {
        auto [y, last] = keel::selective_scan(args_of(in, o));
        return concat({reshape(y, {-1}), reshape(last, {-1})}, 0);  // gradients reach both
      },
      [&](const std::vector<Doubles>& in) { return scan_ref(in, s, o); },
      make_inputs(s, o, seed, true), tol);
}

const Opts kAll{true, true, true, true, true};

TEST(SelectiveScan, MatchesReferenceAndGradientsOverLengthsAndOptions) {
  const std::vector<Opts> variants{{},
                                   kAll,
                                   {true, false, false, true, false},
                                   {false, true, true, false, false},
                                   {false, false, false, false, true}};
  uint64_t seed = 1;
  for (int64_t T : {1, 2, 7, 64})
    for (const Opts& o : variants) check_scan({2, 3, T, 4}, o, seed++);
}

TEST(SelectiveScan, LongSequenceSeveralChunks) {
  // T = 1000 spans 8 chunks of the default 128, the last one partial.
  check_scan({1, 2, 1000, 3}, kAll, 40);
  check_scan({1, 2, 1000, 3}, {}, 41);
}

TEST(SelectiveScan, WideStateAndManyChannels) {
  // N = 256 (the largest accepted) and D = 70 (three dB/dC channel groups).
  check_scan({1, 2, 5, 256}, kAll, 50);
  check_scan({2, 70, 9, 3}, kAll, 51);
}

// Every gradient of the kernel API as float vectors, for bitwise comparison.
std::vector<std::vector<float>> grads_of(const kernels::SelectiveScanGrads& g) {
  std::vector<std::vector<float>> out;
  for (const Tensor* t :
       {&g.du, &g.ddelta, &g.dA, &g.dB, &g.dC, &g.dD, &g.dz, &g.ddelta_bias, &g.dh0}) {
    EXPECT_TRUE(t->defined());
    out.push_back(t->defined() ? t->contiguous().to_vector<float>() : std::vector<float>());
  }
  return out;
}

TEST(SelectiveScan, ChunkedBackwardIsBitIdenticalForAnyChunkAndThreadCount) {
  const Dims s{2, 70, 300, 16};
  const std::vector<Tensor> in = make_inputs(s, kAll, 60, false);
  const SelectiveScanArgs a = args_of(in, kAll);
  Tensor dy = testing::uniform({s.B, s.D, s.T}, 61), dlast = testing::uniform({s.B, s.D, s.N}, 62);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto ref = grads_of(kernels::selective_scan_backward(a, dy, dlast, s.T));  // one chunk
  const auto fwd = kernels::selective_scan(a);
  for (int threads : {1, 2, 3})
    for (int64_t chunk : {int64_t(1), int64_t(7), int64_t(64), int64_t(128), s.T + 5}) {
      SCOPED_TRACE(::testing::Message() << "threads=" << threads << " chunk=" << chunk);
      omp_set_num_threads(threads);
      const auto got = grads_of(kernels::selective_scan_backward(a, dy, dlast, chunk));
      for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], ref[i]) << "gradient " << i;
      // The forward's saved states give the backward the same bits, and the outputs
      // do not depend on the chunk or the threads either.
      Tensor states;
      const auto out = kernels::selective_scan(a, &states, chunk);
      EXPECT_EQ(out.y.to_vector<float>(), fwd.y.to_vector<float>());
      EXPECT_EQ(out.last_state.to_vector<float>(), fwd.last_state.to_vector<float>());
      const auto from_saved =
          grads_of(kernels::selective_scan_backward(a, dy, dlast, states, chunk));
      for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(from_saved[i], ref[i]) << "gradient " << i;
    }
  omp_set_num_threads(saved);
}

TEST(SelectiveScan, EveryCpuIsaPathMatchesReferenceAndIsChunkIndependent) {
  // KEEL_SCAN_ISA caps the run-time choice (kernels/cpu/selective_scan_math.h): the
  // baseline, AVX2 + FMA and (where present) AVX-512 paths each pass the checks.
  for (const char* isa : {"base", "avx2", ""}) {
    SCOPED_TRACE(::testing::Message() << "KEEL_SCAN_ISA=" << isa);
    ::setenv("KEEL_SCAN_ISA", isa, 1);
    check_scan({2, 3, 64, 4}, kAll, 90);
    check_scan({1, 2, 300, 16}, {true, false, true, true, false}, 91);
    const Dims s{2, 40, 200, 16};
    const SelectiveScanArgs a = args_of(make_inputs(s, kAll, 92, false), kAll);
    Tensor dy = testing::uniform({s.B, s.D, s.T}, 93), dl = testing::uniform({s.B, s.D, s.N}, 94);
    const auto ref = grads_of(kernels::selective_scan_backward(a, dy, dl, s.T));
    for (int64_t chunk : {3, 64}) {
      const auto got = grads_of(kernels::selective_scan_backward(a, dy, dl, chunk));
      for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], ref[i]) << "gradient " << i;
    }
  }
  ::unsetenv("KEEL_SCAN_ISA");
}

TEST(SelectiveScan, ContinuingFromLastStateEqualsOneLongScan) {
  // Scanning [0, 40) and then [40, 100) from its last state is the scan of [0, 100),
  // and gradients flow back through last_state into the first half.
  const Dims s{1, 3, 100, 4};
  const Opts o{true, true, true, true, false};
  std::vector<Tensor> in = make_inputs(s, o, 70, true);
  SelectiveScanArgs full = args_of(in, o);
  auto [y, last] = keel::selective_scan(full);
  auto half = [&](int64_t t0, int64_t n, const Tensor& h0) {
    SelectiveScanArgs p = full;
    p.u = narrow(full.u, 2, t0, n), p.delta = narrow(full.delta, 2, t0, n);
    p.B = narrow(full.B, 2, t0, n), p.C = narrow(full.C, 2, t0, n), p.z = narrow(full.z, 2, t0, n);
    p.h0 = h0;
    return keel::selective_scan(p);
  };
  auto [y1, l1] = half(0, 40, Tensor());
  auto [y2, l2] = half(40, 60, l1);
  // Same f32 operations in the same order: identical.
  EXPECT_EQ(concat({y1, y2}, 2).contiguous().to_vector<float>(), y.contiguous().to_vector<float>());
  EXPECT_EQ(l2.to_vector<float>(), last.to_vector<float>());
  Tensor w = testing::uniform({s.B, s.D, s.T}, 71);
  sum(mul(y, w)).backward();
  const auto du_full = in[0].grad().to_vector<float>(), dA_full = in[2].grad().to_vector<float>();
  for (const Tensor& t : in) t.set_grad(Tensor());
  sum(mul(concat({y1, y2}, 2), w)).backward();
  // Same math, but dA sums its two halves separately: 1e-5 relative.
  EXPECT_TRUE(testing::all_close(testing::to_doubles(in[0].grad()),
                                 Doubles(du_full.begin(), du_full.end()), 1e-5, 1e-6));
  EXPECT_TRUE(testing::all_close(testing::to_doubles(in[2].grad()),
                                 Doubles(dA_full.begin(), dA_full.end()), 1e-5, 1e-6));
}

TEST(SelectiveScan, HalfPrecisionInputsComputeInF32) {
  const Dims s{1, 4, 33, 8};
  for (DType dt : {DType::BF16, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    std::vector<Tensor> in = make_inputs(s, kAll, 80, false);
    for (int i : {0, 1, 3, 4, 6}) in[size_t(i)] = in[size_t(i)].to(dt);  // u, delta, B, C, z
    const auto out = kernels::selective_scan(args_of(in, kAll));
    EXPECT_EQ(out.y.dtype(), dt);
    EXPECT_EQ(out.last_state.dtype(), DType::F32);
    std::vector<Doubles> xs;
    for (const Tensor& t : in) xs.push_back(testing::to_doubles(t));
    Doubles ref = scan_ref(xs, s, kAll);
    Doubles got = testing::to_doubles(out.y), last = testing::to_doubles(out.last_state);
    got.insert(got.end(), last.begin(), last.end());
    // f32 arithmetic on the rounded inputs; y rounded once to 8 (bf16) or 11 (f16) bits.
    EXPECT_TRUE(testing::all_close(got, ref, 1e-2, 1e-2));
    const auto g = kernels::selective_scan_backward(
        args_of(in, kAll), testing::uniform({s.B, s.D, s.T}, 81), Tensor());
    EXPECT_EQ(g.du.dtype(), dt);
    EXPECT_EQ(g.dA.dtype(), DType::F32);
  }
}

TEST(SelectiveScan, BadInputsNameShapes) {
  const Tensor u = zeros({2, 3, 8}), A = zeros({3, 4}), Bm = zeros({2, 4, 8});
  auto call = [&](Tensor uu, Tensor dd, Tensor AA, Tensor BB, Tensor CC) {
    return kernels::selective_scan(required(uu, dd, AA, BB, CC));
  };
  EXPECT_KEEL_ERROR(call(zeros({3, 8}), u, A, Bm, Bm), "selective_scan", "u", "(B, D, T)",
                    "(3, 8)");
  EXPECT_KEEL_ERROR(call(u, zeros({2, 3, 7}), A, Bm, Bm), "selective_scan", "delta", "(2, 3, 8)",
                    "(2, 3, 7)");
  EXPECT_KEEL_ERROR(call(u, u, zeros({5, 4}), Bm, Bm), "selective_scan", "A", "(5, 4)", "D = 3");
  EXPECT_KEEL_ERROR(call(u, u, zeros({3}), Bm, Bm), "selective_scan", "A", "(D, N)");
  EXPECT_KEEL_ERROR(call(u, u, A, zeros({2, 5, 8}), Bm), "selective_scan", "B", "(2, 4, 8)",
                    "(2, 5, 8)");
  EXPECT_KEEL_ERROR(call(u, u, A, Bm, zeros({2, 4})), "selective_scan", "C", "(B, N, T)", "(2, 4)");
  EXPECT_KEEL_ERROR(call(u, u, zeros({3, 257}), zeros({2, 257, 8}), zeros({2, 257, 8})),
                    "selective_scan", "N = 257", "256");
  EXPECT_KEEL_ERROR(call(u, u, A, Bm, Tensor()), "selective_scan", "C", "required");
  EXPECT_KEEL_ERROR(call(u.to(DType::I32), u, A, Bm, Bm), "selective_scan", "u", "i32");
  SelectiveScanArgs a = required(u, u, A, Bm, Bm);
  a.D = zeros({4});
  EXPECT_KEEL_ERROR(kernels::selective_scan(a), "selective_scan", "D", "(3,)", "(4,)");
  a.D = Tensor(), a.z = zeros({2, 3, 9});
  EXPECT_KEEL_ERROR(kernels::selective_scan(a), "selective_scan", "z", "(2, 3, 9)");
  a.z = Tensor(), a.delta_bias = zeros({2});
  EXPECT_KEEL_ERROR(kernels::selective_scan(a), "selective_scan", "delta_bias", "(2,)");
  a.delta_bias = Tensor(), a.h0 = zeros({2, 3, 5});
  EXPECT_KEEL_ERROR(kernels::selective_scan(a), "selective_scan", "h0", "(2, 3, 4)", "(2, 3, 5)");
  a.h0 = Tensor();
  EXPECT_KEEL_ERROR(kernels::selective_scan_backward(a, zeros({2, 3, 7}), Tensor()),
                    "selective_scan backward", "dy", "(2, 3, 7)");
  EXPECT_KEEL_ERROR(kernels::selective_scan_backward(a, u, zeros({2, 3, 5})),
                    "selective_scan backward", "dlast", "(2, 3, 5)");
  EXPECT_KEEL_ERROR(kernels::selective_scan_backward(a, u, Tensor(), 0), "chunk", ">= 1");
  EXPECT_KEEL_ERROR(kernels::selective_scan_backward(a, u, Tensor(), zeros({2, 3, 2, 4}), 8),
                    "chunk_states", "(2, 3, 1, 4)");
}

}  // namespace
}  // namespace keel
