// CUDA fused attention against the CPU oracle (kernels/cpu/attention.cpp)
// and against naive attention in float64 computed here: forward (out, lse)
// and backward (dq, dk, dv, with and without dlse), causal and not,
// sequence lengths around the 64-row tiles (1, 63, 64, 65, 200, 257) and
// Tq < Tk; the tensor-core path (bf16/f16, D = 64, 128) and the generic path
// (f32, D = 32, 80, 256, half with odd D); strided and misaligned inputs;
// bitwise-repeatable gradients; attention_forward_accumulate_ and
// attention_merge_ for ring attention; errors. Skipped without a GPU.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tests/cuda/parity.h"

namespace keel {
namespace {

using cuda_test::expect_close;
using cuda_test::expect_equal;
using cuda_test::poison_device_memory;
using cuda_test::to_gpu;
using testing::Doubles;

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Dims {
  int64_t B, H, Tq, Tk, D;
};

// Naive attention in float64 with its gradients. Causal: query i sees keys
// j <= i + (Tk - Tq). dlse may be empty (zero).
struct Naive {
  Doubles out, lse, dq, dk, dv;
};
Naive naive_attention(const Doubles& q, const Doubles& k, const Doubles& v, const Doubles& dout,
                      const Doubles& dlse, const Dims& s, bool causal, double scale) {
  const int64_t BH = s.B * s.H, Tq = s.Tq, Tk = s.Tk, D = s.D, off = Tk - Tq;
  Naive r;
  r.out.assign(size_t(BH * Tq * D), 0.0);
  r.lse.assign(size_t(BH * Tq), 0.0);
  r.dq.assign(size_t(BH * Tq * D), 0.0);
  r.dk.assign(size_t(BH * Tk * D), 0.0);
  r.dv.assign(size_t(BH * Tk * D), 0.0);
  std::vector<double> p(static_cast<size_t>(Tk));
  for (int64_t bh = 0; bh < BH; ++bh) {
    for (int64_t i = 0; i < Tq; ++i) {
      const double* qi = q.data() + (bh * Tq + i) * D;
      const double* gi = dout.data() + (bh * Tq + i) * D;
      double mx = -kInf;
      for (int64_t j = 0; j < Tk; ++j) {
        const double* kj = k.data() + (bh * Tk + j) * D;
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
        p[size_t(j)] = causal && j > i + off ? -kInf : scale * dot;
        mx = std::max(mx, p[size_t(j)]);
      }
      double sum = 0;
      for (int64_t j = 0; j < Tk; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
      r.lse[size_t(bh * Tq + i)] = mx + std::log(sum);
      double* oi = r.out.data() + (bh * Tq + i) * D;
      for (int64_t j = 0; j < Tk; ++j) {
        p[size_t(j)] /= sum;
        const double* vj = v.data() + (bh * Tk + j) * D;
        for (int64_t d = 0; d < D; ++d) oi[d] += p[size_t(j)] * vj[d];
      }
      double delta = 0;
      for (int64_t d = 0; d < D; ++d) delta += gi[d] * oi[d];
      if (!dlse.empty()) delta -= dlse[size_t(bh * Tq + i)];
      double* dqi = r.dq.data() + (bh * Tq + i) * D;
      for (int64_t j = 0; j < Tk; ++j) {
        const double pj = p[size_t(j)];
        if (pj == 0.0) continue;
        const double* kj = k.data() + (bh * Tk + j) * D;
        const double* vj = v.data() + (bh * Tk + j) * D;
        double dp = 0;
        for (int64_t d = 0; d < D; ++d) dp += gi[d] * vj[d];
        const double ds = pj * (dp - delta) * scale;
        double* dkj = r.dk.data() + (bh * Tk + j) * D;
        double* dvj = r.dv.data() + (bh * Tk + j) * D;
        for (int64_t d = 0; d < D; ++d) {
          dqi[d] += ds * kj[d];
          dkj[d] += ds * qi[d];
          dvj[d] += pj * gi[d];
        }
      }
    }
  }
  return r;
}

// Error relative to the largest reference value: attention outputs and
// gradients are sums whose small entries come out of cancellation, so an
// elementwise relative test would judge rounding noise; FlashAttention's
// own tests use the same normwise view. NaN or inf never passes.
void expect_near_max(const Doubles& got, const Doubles& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0, err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want[i]));
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << ": element " << i << " is " << got[i];
    const double e = std::fabs(got[i] - want[i]);
    if (e > err) err = e, worst = i;
  }
  // The floor covers results that are zero but for rounding (one key: dS
  // = P (dP - delta) cancels exactly in float64, to a few ulp in f32).
  EXPECT_LE(err, tol * std::max(scale, 1e-2))
      << what << ": max error " << err << " at " << worst << " (got " << got[worst] << ", want "
      << want[worst] << "), largest reference value " << scale << ", tolerance " << tol;
}
void expect_near_max(const Tensor& got, const Doubles& want, double tol, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  EXPECT_TRUE(got.device().is_cuda()) << what;
  expect_near_max(testing::to_doubles(got), want, tol, what);
}
void expect_near_max(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  ASSERT_TRUE(got.defined() && want.defined()) << what;
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_EQ(got.dtype(), want.dtype()) << what;
  expect_near_max(testing::to_doubles(got), testing::to_doubles(want), tol, what);
}

// Tolerances, as a fraction of the largest reference value.
//   Tensor cores, bf16: P and dS are rounded to bf16 (8 bits, 2^-9
//   relative) before their products, and out/grads are stored in bf16: a
//   few 2^-9 steps in the worst element: out 1.5e-2, grads 3e-2 (dS also
//   carries the cancellation of dP - delta).
//   f16: the same with 11 bits, 8x finer: out 3e-3, grads 6e-3.
//   Generic f32: f32 sums in another order than float64 over up to 257 keys
//   and D = 256: 2e-5 (out) and 1e-4 (grads, sums of sums).
//   Generic half: f32 arithmetic, one rounding of the result: 1e-2 / 5e-3.
//   lse is f32 from exact products of the (rounded) inputs: 2e-5 of its
//   largest value; ex2.approx on the tensor-core path adds ~2^-22 relative.
struct Tols {
  double out, grad, lse;
};
Tols tols_for(DType dt, bool tensor_cores) {
  if (dt == DType::BF16) return tensor_cores ? Tols{1.5e-2, 3e-2, 2e-5} : Tols{1e-2, 1e-2, 2e-5};
  if (dt == DType::F16) return tensor_cores ? Tols{3e-3, 6e-3, 2e-5} : Tols{2e-3, 2e-3, 2e-5};
  return {2e-5, 1e-4, 2e-5};
}

struct Case {
  Dims s;
  DType dt;
  bool causal;
  bool with_dlse;
};

std::string describe(const Case& c) {
  return std::string(dtype_name(c.dt)) + " B=" + std::to_string(c.s.B) +
         " H=" + std::to_string(c.s.H) + " Tq=" + std::to_string(c.s.Tq) +
         " Tk=" + std::to_string(c.s.Tk) + " D=" + std::to_string(c.s.D) +
         (c.causal ? " causal" : " bidirectional") + (c.with_dlse ? " dlse" : "");
}

bool tensor_core_case(const Case& c) {
  return (c.dt == DType::BF16 || c.dt == DType::F16) && (c.s.D == 64 || c.s.D == 128);
}

// Forward and backward of one case on the GPU against the CPU oracle and
// float64. `prep` turns each CPU input into the GPU tensor the op gets (a
// plain copy, or a strided/misaligned view of the same values).
template <typename Prep>
void run_case(const Case& c, uint64_t seed, Prep prep) {
  SCOPED_TRACE(describe(c));
  const Dims& s = c.s;
  const Tols tol = tols_for(c.dt, tensor_core_case(c));
  Tensor q = testing::uniform({s.B, s.H, s.Tq, s.D}, seed, -1.5, 1.5, c.dt);
  Tensor k = testing::uniform({s.B, s.H, s.Tk, s.D}, seed + 1, -1.5, 1.5, c.dt);
  Tensor v = testing::uniform({s.B, s.H, s.Tk, s.D}, seed + 2, -1.0, 1.0, c.dt);
  Tensor dout = testing::uniform({s.B, s.H, s.Tq, s.D}, seed + 3, -1.0, 1.0, c.dt);
  Tensor dlse = c.with_dlse ? testing::uniform({s.B, s.H, s.Tq}, seed + 4, -0.5, 0.5) : Tensor();
  const double scale = 1.0 / std::sqrt(double(s.D));

  auto [out_c, lse_c] = kernels::attention_forward(q, k, v, c.causal);
  auto g_c = kernels::attention_backward(q, k, v, out_c, lse_c, dout, dlse, c.causal);

  Tensor qg = prep(q), kg = prep(k), vg = prep(v), doutg = prep(dout);
  Tensor dlseg = c.with_dlse ? to_gpu(dlse) : Tensor();
  poison_device_memory();
  auto [out_g, lse_g] = kernels::attention_forward(qg, kg, vg, c.causal);
  poison_device_memory();
  auto g_g = kernels::attention_backward(qg, kg, vg, out_g, lse_g, doutg, dlseg, c.causal);

  const Naive ref =
      naive_attention(testing::to_doubles(q), testing::to_doubles(k), testing::to_doubles(v),
                      testing::to_doubles(dout),
                      c.with_dlse ? testing::to_doubles(dlse) : Doubles(), s, c.causal, scale);
  EXPECT_EQ(out_g.dtype(), c.dt);
  EXPECT_EQ(lse_g.dtype(), DType::F32);
  EXPECT_EQ(g_g.dq.dtype(), c.dt);
  expect_near_max(out_g, ref.out, tol.out, "out vs float64");
  expect_near_max(lse_g, ref.lse, tol.lse, "lse vs float64");
  expect_near_max(g_g.dq, ref.dq, tol.grad, "dq vs float64");
  expect_near_max(g_g.dk, ref.dk, tol.grad, "dk vs float64");
  expect_near_max(g_g.dv, ref.dv, tol.grad, "dv vs float64");
  // The CPU oracle is itself within its own (tighter) tolerance of float64,
  // so the same bounds hold against it.
  expect_near_max(out_g, out_c, tol.out, "out vs CPU");
  expect_near_max(lse_g, lse_c, tol.lse, "lse vs CPU");
  expect_near_max(g_g.dq, g_c.dq, tol.grad, "dq vs CPU");
  expect_near_max(g_g.dk, g_c.dk, tol.grad, "dk vs CPU");
  expect_near_max(g_g.dv, g_c.dv, tol.grad, "dv vs CPU");
}

void run_case(const Case& c, uint64_t seed) {
  run_case(c, seed, [](const Tensor& t) { return to_gpu(t); });
}

TEST(CudaAttention, TensorCorePathMatchesCpuAndFloat64) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 5000;
  for (DType dt : {DType::BF16, DType::F16})
    for (int64_t D : {64, 128})
      for (int64_t T : {1, 63, 64, 65, 200, 257})
        for (bool causal : {false, true})
          for (bool with_dlse : {false, true}) {
            run_case({{1, 2, T, T, D}, dt, causal, with_dlse}, seed);
            seed += 10;
          }
}

TEST(CudaAttention, TensorCorePathQueriesShorterOrLongerThanKeys) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 6000;
  // Causal with Tq < Tk: the queries are the last Tq positions, so the mask
  // diagonal sits at an offset inside a tile. Bidirectional: either longer.
  const Dims dims[] = {{2, 2, 63, 200, 64},
                       {1, 3, 1, 257, 128},
                       {1, 2, 65, 130, 64},
                       {1, 2, 17, 64, 128},
                       {1, 1, 100, 37, 64}};
  for (DType dt : {DType::BF16, DType::F16})
    for (const Dims& d : dims)
      for (bool causal : {false, true}) {
        if (causal && d.Tq > d.Tk) continue;
        run_case({d, dt, causal, true}, seed);
        seed += 10;
      }
}

TEST(CudaAttention, GenericPathMatchesCpuAndFloat64) {
  KEEL_SKIP_WITHOUT_CUDA();
  uint64_t seed = 7000;
  // f32 at every D, and bf16/f16 at head dims the tensor cores do not take.
  for (int64_t T : {1, 63, 65, 200})
    for (bool causal : {false, true}) {
      for (int64_t D : {32, 64, 80, 128}) {
        run_case({{1, 2, T, T, D}, DType::F32, causal, T != 63}, seed);
        seed += 10;
      }
      for (DType dt : {DType::BF16, DType::F16})
        for (int64_t D : {32, 80}) {
          run_case({{1, 2, T, T, D}, dt, causal, true}, seed);
          seed += 10;
        }
    }
  run_case({{1, 1, 65, 65, 256}, DType::F32, true, true}, seed + 1);  // the largest D
  run_case({{2, 1, 40, 257, 3}, DType::F32, true, false}, seed + 2);  // tiny D, Tq < Tk
  run_case({{1, 2, 257, 257, 80}, DType::BF16, false, true}, seed + 3);
}

TEST(CudaAttention, StridedAndMisalignedInputs) {
  KEEL_SKIP_WITHOUT_CUDA();
  // The model's QKV split: (B, T, H, D) viewed as (B, H, T, D), no copy on
  // the tensor-core path (strides of B, H, T are multiples of 8 elements).
  auto bthd = [](const Tensor& t) {  // same values, (B, T, H, D) storage
    return to_gpu(t.transpose(1, 2).contiguous()).transpose(1, 2);
  };
  // Rows that start one element past a 16-byte boundary: copied first.
  auto misaligned = [](const Tensor& t) {
    Tensor base = empty({t.numel() + 1}, t.dtype(), cuda_test::gpu());
    Tensor view = base.narrow(0, 1, t.numel()).view(t.sizes());
    view.copy_(to_gpu(t));
    return view;
  };
  // D stride 2: only the generic path reads it directly; the tensor-core
  // path copies.
  auto d_strided = [](const Tensor& t) {
    Tensor wide =
        zeros({t.size(0), t.size(1), t.size(2), 2 * t.size(3)}, t.dtype(), cuda_test::gpu());
    Tensor view = wide.as_strided(t.sizes(), {wide.stride(0), wide.stride(1), wide.stride(2), 2},
                                  wide.offset());
    view.copy_(to_gpu(t));
    return view;
  };
  uint64_t seed = 8000;
  for (DType dt : {DType::BF16, DType::F32})
    for (int64_t D : {64, 80})
      for (bool causal : {false, true}) {
        const Case c{{2, 3, 70, 70, D}, dt, causal, true};
        run_case(c, seed, bthd);
        run_case(c, seed + 1, misaligned);
        run_case(c, seed + 2, d_strided);
        seed += 10;
      }
}

TEST(CudaAttention, BackwardIsBitwiseRepeatable) {
  KEEL_SKIP_WITHOUT_CUDA();
  // No atomics: each gradient element is summed by one warp in a fixed
  // order, so two runs give the same bits (keel's exact resume needs it).
  for (DType dt : {DType::BF16, DType::F32})
    for (bool causal : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (causal ? " causal" : ""));
      Tensor q = to_gpu(testing::uniform({2, 4, 300, 64}, 9000, -1.5, 1.5, dt));
      Tensor k = to_gpu(testing::uniform({2, 4, 300, 64}, 9001, -1.5, 1.5, dt));
      Tensor v = to_gpu(testing::uniform({2, 4, 300, 64}, 9002, -1.0, 1.0, dt));
      Tensor dout = to_gpu(testing::uniform({2, 4, 300, 64}, 9003, -1.0, 1.0, dt));
      Tensor dlse = to_gpu(testing::uniform({2, 4, 300}, 9004, -0.5, 0.5));
      auto [out, lse] = kernels::attention_forward(q, k, v, causal);
      auto a = kernels::attention_backward(q, k, v, out, lse, dout, dlse, causal);
      auto b = kernels::attention_backward(q, k, v, out, lse, dout, dlse, causal);
      expect_equal(b.dq, a.dq, "dq, run twice");
      expect_equal(b.dk, a.dk, "dk, run twice");
      expect_equal(b.dv, a.dv, "dv, run twice");
      auto [out2, lse2] = kernels::attention_forward(q, k, v, causal);
      expect_equal(out2, out, "out, run twice");
      expect_equal(lse2, lse, "lse, run twice");
    }
}

TEST(CudaAttention, ForwardAccumulateOverTwoKeyBlocksEqualsFullAttention) {
  KEEL_SKIP_WITHOUT_CUDA();
  const int64_t B = 2, H = 2, T = 200, h = 77;
  for (DType dt : {DType::BF16, DType::F16, DType::F32})
    for (int64_t D : {64, 128, 80}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " D=" + std::to_string(D));
      const bool tc = (dt != DType::F32) && (D == 64 || D == 128);
      const Tols tol = tols_for(dt, tc);
      Tensor q = testing::uniform({B, H, T, D}, 9100 + uint64_t(D), -1.5, 1.5, dt);
      Tensor k = testing::uniform({B, H, T, D}, 9200 + uint64_t(D), -1.5, 1.5, dt);
      Tensor v = testing::uniform({B, H, T, D}, 9300 + uint64_t(D), -1.0, 1.0, dt);
      Tensor qg = to_gpu(q), kg = to_gpu(k), vg = to_gpu(v);
      const Doubles qd = testing::to_doubles(q), kd = testing::to_doubles(k),
                    vd = testing::to_doubles(v);
      const Doubles none;
      {
        SCOPED_TRACE("bidirectional: keys [0, 77) then [77, 200)");
        Tensor out = zeros({B, H, T, D}, DType::F32, cuda_test::gpu());  // (B, H, T, D)
        Tensor lse = full({B, H, T}, -kInf, DType::F32, cuda_test::gpu());
        kernels::attention_forward_accumulate_(qg, kg.narrow(2, 0, h), vg.narrow(2, 0, h), false,
                                               out, lse);
        kernels::attention_forward_accumulate_(qg, kg.narrow(2, h, T - h), vg.narrow(2, h, T - h),
                                               false, out, lse);
        const Naive ref = naive_attention(qd, kd, vd, qd, none, {B, H, T, T, D}, false,
                                          1.0 / std::sqrt(double(D)));
        // The merged output stays f32: only P's rounding (tensor cores) remains.
        expect_near_max(out, ref.out, tc ? tol.out : 2e-5, "out");
        expect_near_max(lse, ref.lse, tol.lse, "lse");
        // Against the CPU's accumulate on the same blocks.
        Tensor out_c = zeros({B, H, T, D}), lse_c = full({B, H, T}, -kInf);
        kernels::attention_forward_accumulate_(q, k.narrow(2, 0, h), v.narrow(2, 0, h), false,
                                               out_c, lse_c);
        kernels::attention_forward_accumulate_(q, k.narrow(2, h, T - h), v.narrow(2, h, T - h),
                                               false, out_c, lse_c);
        expect_near_max(out, out_c, tc ? tol.out : 2e-5, "out vs CPU");
        expect_near_max(lse, lse_c, tol.lse, "lse vs CPU");
      }
      {
        // A causal ring step: queries [h, T) see their own keys causally and
        // the earlier keys in full. The running pair is a strided view (a
        // transposed (B, T, H, D) buffer), as a caller's slice may be.
        SCOPED_TRACE("causal: queries [77, 200): keys [77, 200) causally, then [0, 77)");
        const int64_t n = T - h;
        Tensor q2 = qg.narrow(2, h, n);
        Tensor out_bthd = zeros({B, n, H, D}, DType::F32, cuda_test::gpu());
        Tensor out = out_bthd.transpose(1, 2);  // (B, H, n, D), strided
        Tensor lse = full({B, H, n}, -kInf, DType::F32, cuda_test::gpu());
        kernels::attention_forward_accumulate_(q2, kg.narrow(2, h, n), vg.narrow(2, h, n), true,
                                               out, lse);
        kernels::attention_forward_accumulate_(q2, kg.narrow(2, 0, h), vg.narrow(2, 0, h), false,
                                               out, lse);
        const Naive ref = naive_attention(testing::to_doubles(q.narrow(2, h, n)), kd, vd,
                                          testing::to_doubles(q.narrow(2, h, n)), none,
                                          {B, H, n, T, D}, true, 1.0 / std::sqrt(double(D)));
        expect_near_max(out, ref.out, tc ? tol.out : 2e-5, "out");
        expect_near_max(lse, ref.lse, tol.lse, "lse");
      }
    }
}

TEST(CudaAttention, MergeMatchesCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  const int64_t B = 2, H = 3, T = 33, D = 80;
  for (DType blk_dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(blk_dt));
    Tensor out = testing::uniform({B, H, T, D}, 9400, -1, 1);
    Tensor lse = testing::uniform({B, H, T}, 9401, -3, 3);
    Tensor blk = testing::uniform({B, H, T, D}, 9402, -1, 1, blk_dt);
    Tensor lse_blk = testing::uniform({B, H, T}, 9403, -3, 3);
    // Rows without keys on either side (-inf), and on both.
    lse.narrow(2, 0, 4).fill_(-kInf);
    lse_blk.narrow(2, 2, 5).fill_(-kInf);
    Tensor out_g = to_gpu(out), lse_g = to_gpu(lse);
    kernels::attention_merge_(out, lse, blk, lse_blk);
    kernels::attention_merge_(out_g, lse_g, to_gpu(blk), to_gpu(lse_blk));
    // Same formula in f32 on both; CUDA's expf/log1pf vs glibc: a few ulp.
    expect_close(out_g, out, cuda_test::Tol{1e-5, 1e-6}, "merged out");
    expect_close(lse_g, lse, cuda_test::Tol{1e-5, 1e-6}, "merged lse");
  }
  // Strided running pair (a (B, T, H, D) buffer seen as (B, H, T, D)).
  Tensor out = testing::uniform({B, T, H, D}, 9410, -1, 1).transpose(1, 2);
  Tensor lse = testing::uniform({B, T, H}, 9411, -3, 3).transpose(1, 2);
  Tensor blk = testing::uniform({B, H, T, D}, 9412, -1, 1);
  Tensor lse_blk = testing::uniform({B, H, T}, 9413, -3, 3);
  Tensor out_g = to_gpu(out), lse_g = to_gpu(lse);
  ASSERT_FALSE(out_g.is_contiguous());
  kernels::attention_merge_(out, lse, blk, lse_blk);
  kernels::attention_merge_(out_g, lse_g, to_gpu(blk), to_gpu(lse_blk));
  expect_close(out_g, out, cuda_test::Tol{1e-5, 1e-6}, "strided merged out");
  expect_close(lse_g, lse, cuda_test::Tol{1e-5, 1e-6}, "strided merged lse");
}

TEST(CudaAttention, EmptyAndDegenerateShapes) {
  KEEL_SKIP_WITHOUT_CUDA();
  // No queries: empty outputs, and zero key gradients (every element written).
  Tensor q = to_gpu(zeros({1, 2, 0, 64}, DType::BF16));
  Tensor k = to_gpu(testing::uniform({1, 2, 9, 64}, 9500, -1, 1, DType::BF16));
  auto [out, lse] = kernels::attention_forward(q, k, k, false);
  EXPECT_EQ(out.numel(), 0);
  poison_device_memory();
  auto g = kernels::attention_backward(q, k, k, out, lse, out, Tensor(), false);
  expect_equal(g.dk, zeros({1, 2, 9, 64}, DType::BF16), "dk without queries");
  expect_equal(g.dv, zeros({1, 2, 9, 64}, DType::BF16), "dv without queries");
}

TEST(CudaAttention, UnsupportedHeadDimIsAnError) {
  KEEL_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor q = to_gpu(zeros({1, 1, 4, 512}, dt));
    EXPECT_KEEL_ERROR(kernels::attention_forward(q, q, q, false), "attention", "D = 512",
                      "D <= 256");
    Tensor out = to_gpu(zeros({1, 1, 4, 512}));
    Tensor lse = to_gpu(full({1, 1, 4}, -kInf));
    EXPECT_KEEL_ERROR(kernels::attention_forward_accumulate_(q, q, q, false, out, lse),
                      "attention_forward_accumulate_", "D = 512");
  }
  // The CPU oracle has no such limit.
  auto [o, l] = kernels::attention_forward(zeros({1, 1, 2, 512}), zeros({1, 1, 2, 512}),
                                           zeros({1, 1, 2, 512}), false);
  EXPECT_EQ(o.size(3), 512);
  // Mixed devices are refused before any kernel runs.
  Tensor qg = to_gpu(zeros({1, 1, 4, 64}, DType::BF16));
  EXPECT_KEEL_ERROR(kernels::attention_forward(qg, zeros({1, 1, 4, 64}, DType::BF16), qg, false),
                    "attention", "expected tensors on");
}

// attention_unfused on the GPU (matmul, softmax, dropout kernels) against
// the CPU's, with dropout on the probabilities: the same mask, forward and
// gradients within f32 summation-order tolerance.
TEST(CudaAttentionUnfused, DropoutMatchesCpu) {
  KEEL_SKIP_WITHOUT_CUDA();
  auto [q, qg] = cuda_test::leaf_pair({2, 3, 33, 16}, 4100, -1.5, 1.5);
  auto [k, kg] = cuda_test::leaf_pair({2, 3, 33, 16}, 4101, -1.5, 1.5);
  auto [v, vg] = cuda_test::leaf_pair({2, 3, 33, 16}, 4102);
  Generator gc(7), gg(7);
  Tensor y = attention_unfused(q, k, v, true, 0.0, 0.2, true, gc);
  Tensor yg = attention_unfused(qg, kg, vg, true, 0.0, 0.2, true, gg);
  expect_close(yg, y, cuda_test::tol_for(DType::F32), "attention_unfused out");
  Tensor dout = testing::uniform({2, 3, 33, 16}, 4103);
  y.backward(dout);
  yg.backward(to_gpu(dout));
  const cuda_test::Tol tol = cuda_test::tol_for_sums(DType::F32, 1e-5);
  expect_close(qg.grad(), q.grad(), tol, "attention_unfused dq");
  expect_close(kg.grad(), k.grad(), tol, "attention_unfused dk");
  expect_close(vg.grad(), v.grad(), tol, "attention_unfused dv");
}

}  // namespace
}  // namespace keel
