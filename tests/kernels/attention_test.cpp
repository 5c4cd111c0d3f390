// Fused attention: the blocked kernel against a naive float64
// softmax(q k^T * scale + mask) v, forward and backward (q, k, v and the lse
// output), over sequence lengths that are and are not multiples of the block,
// shorter than a block, several head dims and block sizes, causal or not,
// strided and half-precision inputs; the ring-attention merge; bad inputs.
// attention_unfused: equal to the fused op without dropout, and with dropout
// on the probabilities against the reference with the same mask.
#include "kernels/attention.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>

#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

using kernels::AttentionBlocks;
using testing::check_op;
using testing::Doubles;
using testing::leaf;
using testing::Tolerance;

struct Dims {
  int64_t B, H, Tq, Tk, D;
};

// out (B, H, Tq, D) and lse (B, H, Tq) of softmax(q k^T * scale + mask) v in
// float64, the whole score row at once. Causal: query i sees keys
// j <= i + (Tk - Tq), the ends of the two sequences aligned. prob_scale, if
// given (B, H, Tq, Tk), multiplies the probabilities before v (a dropout
// mask); lse is unaffected.
void naive_attention(const Doubles& q, const Doubles& k, const Doubles& v, const Dims& s,
                     bool causal, double scale, Doubles* out, Doubles* lse,
                     const Doubles* prob_scale = nullptr) {
  const int64_t B = s.B, H = s.H, Tq = s.Tq, Tk = s.Tk, D = s.D;
  out->assign(size_t(B * H * Tq * D), 0.0);
  lse->assign(size_t(B * H * Tq), 0.0);
  std::vector<double> row(static_cast<size_t>(Tk));
  for (int64_t bh = 0; bh < B * H; ++bh) {
    for (int64_t i = 0; i < Tq; ++i) {
      const double* qi = q.data() + (bh * Tq + i) * D;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < Tk; ++j) {
        const double* kj = k.data() + (bh * Tk + j) * D;
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
        row[size_t(j)] = causal && j > i + (Tk - Tq) ? -INFINITY : scale * dot;
        mx = std::max(mx, row[size_t(j)]);
      }
      double sum = 0;
      for (int64_t j = 0; j < Tk; ++j) sum += (row[size_t(j)] = std::exp(row[size_t(j)] - mx));
      (*lse)[size_t(bh * Tq + i)] = mx + std::log(sum);
      double* oi = out->data() + (bh * Tq + i) * D;
      for (int64_t j = 0; j < Tk; ++j) {
        const double pj = row[size_t(j)] / sum *
                          (prob_scale ? (*prob_scale)[size_t((bh * Tq + i) * Tk + j)] : 1.0);
        const double* vj = v.data() + (bh * Tk + j) * D;
        for (int64_t d = 0; d < D; ++d) oi[d] += pj * vj[d];
      }
    }
  }
}

double default_scale(const Dims& s) { return 1.0 / std::sqrt(double(s.D)); }

// The kernels with chosen block sizes, recorded on the tape so check_op can
// differentiate them (keel::attention always uses the default blocks).
std::pair<Tensor, Tensor> blocked_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                            bool causal, double scale, AttentionBlocks blocks) {
  auto res = kernels::attention_forward(q, k, v, causal, scale, blocks);
  Tensor qs = q.detach(), ks = k.detach(), vs = v.detach();
  Tensor os = res.first.detach(), ls = res.second.detach();
  record("attention_blocked", {q, k, v}, {res.first, res.second}, [=](BackwardCtx& c) {
    auto g = kernels::attention_backward(qs, ks, vs, os, ls, c.grad(0), c.grad(1), causal, scale,
                                         blocks);
    return std::vector<Tensor>{g.dq, g.dk, g.dv};
  });
  return res;
}

// f32 blocked kernel against the f64 reference: the score row is split over
// blocks and rescaled by the online softmax, so sums run in a different
// order than the reference; values are O(1).
Tolerance attention_tolerance() {
  Tolerance tol;
  tol.fwd_rtol = 2e-5;  // f32 sums over D and Tk in block order; exp to ~1 ulp
  tol.fwd_atol = 2e-6;
  return tol;
}

// Checks out and lse, forward and backward, for one configuration.
void check_attention(const Dims& s, bool causal, AttentionBlocks blocks, double scale = 0.0,
                     uint64_t seed = 1) {
  SCOPED_TRACE(::testing::Message() << "B=" << s.B << " H=" << s.H << " Tq=" << s.Tq << " Tk="
                                    << s.Tk << " D=" << s.D << " causal=" << causal << " blocks=("
                                    << blocks.q << ", " << blocks.k << ") scale=" << scale);
  const double ref_scale = scale > 0 ? scale : default_scale(s);
  Tensor q = leaf({s.B, s.H, s.Tq, s.D}, seed, -1.5, 1.5);
  Tensor k = leaf({s.B, s.H, s.Tk, s.D}, seed + 1, -1.5, 1.5);
  Tensor v = leaf({s.B, s.H, s.Tk, s.D}, seed + 2);
  for (int which = 0; which < 2; ++which) {
    SCOPED_TRACE(which == 0 ? "out" : "lse");
    auto f = [&](const std::vector<Tensor>& in) {
      auto r = blocked_attention(in[0], in[1], in[2], causal, scale, blocks);
      return which == 0 ? r.first : r.second;
    };
    auto ref = [&](const std::vector<Doubles>& in) {
      Doubles out, lse;
      naive_attention(in[0], in[1], in[2], s, causal, ref_scale, &out, &lse);
      return which == 0 ? out : lse;
    };
    check_op(f, ref, {q, k, v}, attention_tolerance());
  }
}

TEST(Attention, MatchesReferenceAcrossLengthsHeadDimsAndBlocks) {
  // T: a single row, shorter than a block, not a multiple of the block, an
  // exact multiple; blocks: square, ragged (q != k), larger than T.
  const int64_t lengths[] = {1, 5, 17, 24};
  const int64_t head_dims[] = {1, 3, 8};
  const AttentionBlocks block_sizes[] = {{4, 4}, {8, 3}, {64, 64}};
  for (bool causal : {false, true})
    for (int64_t T : lengths)
      for (int64_t D : head_dims)
        for (AttentionBlocks blk : block_sizes)
          check_attention({1, 2, T, T, D}, causal, blk, 0.0, uint64_t(T * 10 + D));
}

TEST(Attention, BatchAndHeadsExplicitScale) {
  check_attention({2, 3, 11, 11, 4}, false, {4, 8}, 0.7);
  check_attention({2, 3, 11, 11, 4}, true, {8, 4}, 0.7);
  check_attention({3, 1, 9, 9, 16}, true, {2, 5});
}

TEST(Attention, KeysLongerThanQueries) {
  // Non-causal: any Tk. Causal: the queries are the last Tq positions.
  check_attention({1, 2, 7, 13, 4}, false, {4, 4});
  check_attention({1, 2, 13, 7, 4}, false, {4, 4});
  check_attention({1, 2, 5, 12, 4}, true, {4, 4});
  check_attention({1, 2, 5, 12, 4}, true, {2, 8});
  check_attention({1, 1, 1, 9, 3}, true, {64, 64});  // one decoding step
}

TEST(Attention, PublicOpWithDefaultBlocksCrossingABlockEdge) {
  // 70 > 64, so the default tiling has a full and a partial block.
  const Dims s{1, 1, 70, 70, 4};
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    Tensor q = leaf({1, 1, 70, 4}, 21, -1.5, 1.5), k = leaf({1, 1, 70, 4}, 22, -1.5, 1.5);
    Tensor v = leaf({1, 1, 70, 4}, 23);
    check_op(
        [&](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2], causal).first; },
        [&](const std::vector<Doubles>& in) {
          Doubles out, lse;
          naive_attention(in[0], in[1], in[2], s, causal, default_scale(s), &out, &lse);
          return out;
        },
        {q, k, v}, attention_tolerance());
  }
}

TEST(Attention, LargerForwardMatchesReference) {
  const Dims s{1, 2, 300, 300, 64};
  Tensor q = testing::uniform({1, 2, 300, 64}, 31, -1.5, 1.5);
  Tensor k = testing::uniform({1, 2, 300, 64}, 32, -1.5, 1.5);
  Tensor v = testing::uniform({1, 2, 300, 64}, 33);
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    auto [out, lse] = attention(q, k, v, causal);
    Doubles ro, rl;
    naive_attention(testing::to_doubles(q), testing::to_doubles(k), testing::to_doubles(v), s,
                    causal, default_scale(s), &ro, &rl);
    // D = 64 products per score and 300-key rows summed in f32.
    EXPECT_TRUE(testing::all_close(testing::to_doubles(out), ro, 1e-4, 1e-5));
    EXPECT_TRUE(testing::all_close(testing::to_doubles(lse), rl, 1e-5, 1e-5));
  }
}

TEST(Attention, StridedInputsFromBTHDLayout) {
  // Projections usually come out as (B, T, H, D); attention reads the
  // transposed view (B, H, T, D) without a copy.
  const Dims s{2, 3, 10, 10, 4};
  Tensor q = testing::uniform({2, 10, 3, 4}, 41).transpose(1, 2);
  Tensor k = testing::uniform({2, 10, 3, 4}, 42).transpose(1, 2);
  Tensor v = testing::uniform({2, 10, 3, 4}, 43).transpose(1, 2);
  ASSERT_FALSE(q.is_contiguous());
  for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    check_op(
        [&](const std::vector<Tensor>& in) {
          return blocked_attention(in[0], in[1], in[2], causal, 0.0, {4, 4}).first;
        },
        [&](const std::vector<Doubles>& in) {
          Doubles out, lse;
          naive_attention(in[0], in[1], in[2], s, causal, default_scale(s), &out, &lse);
          return out;
        },
        {q, k, v}, attention_tolerance());
  }
  // A D stride other than 1 takes the packing path.
  Tensor qd = testing::uniform({1, 1, 4, 6}, 44).permute({0, 1, 3, 2});  // (1, 1, 6, 4)
  Tensor kd = testing::uniform({1, 1, 4, 6}, 45).permute({0, 1, 3, 2});
  Tensor vd = testing::uniform({1, 1, 4, 6}, 46).permute({0, 1, 3, 2});
  auto [o1, l1] = kernels::attention_forward(qd, kd, vd, true, 0.0, {4, 4});
  auto [o2, l2] = kernels::attention_forward(qd.contiguous(), kd.contiguous(), vd.contiguous(),
                                             true, 0.0, {4, 4});
  // Same f32 values in the same order: identical results.
  EXPECT_EQ(testing::to_doubles(o1), testing::to_doubles(o2));
  EXPECT_EQ(testing::to_doubles(l1), testing::to_doubles(l2));
}

TEST(Attention, HalfPrecisionStorageComputesInF32) {
  const Dims s{1, 2, 19, 19, 8};
  for (DType dt : {DType::BF16, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor q = testing::uniform({1, 2, 19, 8}, 51, -1.5, 1.5, dt);
    Tensor k = testing::uniform({1, 2, 19, 8}, 52, -1.5, 1.5, dt);
    Tensor v = testing::uniform({1, 2, 19, 8}, 53, -1, 1, dt);
    auto [out, lse] = kernels::attention_forward(q, k, v, true, 0.0, {8, 8});
    EXPECT_EQ(out.dtype(), dt);
    EXPECT_EQ(lse.dtype(), DType::F32);
    Doubles qd = testing::to_doubles(q), kd = testing::to_doubles(k), vd = testing::to_doubles(v);
    Doubles ro, rl;
    naive_attention(qd, kd, vd, s, true, default_scale(s), &ro, &rl);
    // The reference sees the same rounded inputs; the output is rounded
    // once to bf16 (8 bits) / f16 (11 bits): 1e-2 relative covers both.
    EXPECT_TRUE(testing::all_close(testing::to_doubles(out), ro, 1e-2, 1e-3));
    // lse stays f32 from f32 arithmetic on the exact inputs.
    EXPECT_TRUE(testing::all_close(testing::to_doubles(lse), rl, 1e-5, 1e-5));

    Tensor dout = testing::uniform({1, 2, 19, 8}, 54, -1, 1, dt);
    auto g = kernels::attention_backward(q, k, v, out, lse, dout, Tensor(), true, 0.0, {8, 8});
    auto g32 = kernels::attention_backward(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32),
                                           out.to(DType::F32), lse, dout.to(DType::F32), Tensor(),
                                           true, 0.0, {8, 8});
    EXPECT_EQ(g.dq.dtype(), dt);
    // Same f32 arithmetic on the same values, then one rounding to half.
    EXPECT_TRUE(
        testing::all_close(testing::to_doubles(g.dq), testing::to_doubles(g32.dq), 1e-2, 1e-3));
    EXPECT_TRUE(
        testing::all_close(testing::to_doubles(g.dk), testing::to_doubles(g32.dk), 1e-2, 1e-3));
    EXPECT_TRUE(
        testing::all_close(testing::to_doubles(g.dv), testing::to_doubles(g32.dv), 1e-2, 1e-3));
  }
}

TEST(Attention, BackwardSameForAnyThreadCount) {
  // One thread takes the fused pass per (b, h); eight threads on two heads
  // take the split passes over key blocks and query blocks. Both sum every
  // block product in the same order, and the forward gives each query block
  // to one thread, so the results agree to rounding of the BLAS kernels.
  struct Case {
    Dims s;
    bool causal;
    AttentionBlocks blocks;
  };
  const Case cases[] = {{{1, 2, 37, 37, 8}, false, {8, 8}},
                        {{1, 2, 37, 37, 8}, true, {8, 8}},
                        {{1, 2, 5, 12, 4}, true, {2, 8}},
                        {{1, 2, 13, 7, 3}, false, {4, 3}}};
  const int saved = omp_get_max_threads();
  for (const Case& c : cases) {
    const Dims& s = c.s;
    SCOPED_TRACE(::testing::Message() << "Tq=" << s.Tq << " Tk=" << s.Tk << " causal=" << c.causal);
    Tensor q = testing::uniform({s.B, s.H, s.Tq, s.D}, 61);
    Tensor k = testing::uniform({s.B, s.H, s.Tk, s.D}, 62);
    Tensor v = testing::uniform({s.B, s.H, s.Tk, s.D}, 63);
    Tensor dout = testing::uniform({s.B, s.H, s.Tq, s.D}, 64);
    Tensor dlse = testing::uniform({s.B, s.H, s.Tq}, 65);
    std::vector<Doubles> results[2];
    for (int run = 0; run < 2; ++run) {
      omp_set_num_threads(run == 0 ? 1 : 8);
      auto [out, lse] = kernels::attention_forward(q, k, v, c.causal, 0.0, c.blocks);
      auto g = kernels::attention_backward(q, k, v, out, lse, dout, dlse, c.causal, 0.0, c.blocks);
      for (const Tensor& t : {out, lse, g.dq, g.dk, g.dv})
        results[run].push_back(testing::to_doubles(t));
    }
    omp_set_num_threads(saved);
    for (size_t i = 0; i < results[0].size(); ++i)
      EXPECT_TRUE(testing::all_close(results[1][i], results[0][i], 1e-6, 1e-7)) << "tensor " << i;
  }
}

TEST(Attention, MergeOfKeyHalvesEqualsFullAttention) {
  // Ring attention's step: attention over keys [0, T) equals the merge of
  // attention over [0, T/2) and over [T/2, T).
  const int64_t T = 24, h = T / 2;
  Tensor q = testing::uniform({2, 2, T, 8}, 71, -2, 2);
  Tensor k = testing::uniform({2, 2, T, 8}, 72, -2, 2);
  Tensor v = testing::uniform({2, 2, T, 8}, 73);
  auto [full_out, full_lse] = kernels::attention_forward(q, k, v, false);
  auto [o1, l1] = kernels::attention_forward(q, k.narrow(2, 0, h), v.narrow(2, 0, h), false);
  auto [o2, l2] = kernels::attention_forward(q, k.narrow(2, h, h), v.narrow(2, h, h), false);
  // Start from the empty pair (zeros, -inf), as a ring step does.
  Tensor out = zeros({2, 2, T, 8});                                        // (B, H, T, D)
  Tensor lse = full({2, 2, T}, -std::numeric_limits<double>::infinity());  // (B, H, T)
  kernels::attention_merge_(out, lse, o1, l1);
  EXPECT_EQ(testing::to_doubles(out), testing::to_doubles(o1));
  kernels::attention_merge_(out, lse, o2, l2);
  // Two f32 rescalings of partial results against one pass: a few ulp.
  EXPECT_TRUE(
      testing::all_close(testing::to_doubles(out), testing::to_doubles(full_out), 1e-5, 1e-6));
  EXPECT_TRUE(
      testing::all_close(testing::to_doubles(lse), testing::to_doubles(full_lse), 1e-6, 1e-6));
}

TEST(Attention, CausalRingStepMatchesFullCausalRows) {
  // The later half of the queries sees the earlier keys in full and its own
  // keys causally: the two merged give rows [T/2, T) of causal attention.
  const int64_t T = 20, h = T / 2;
  Tensor q = testing::uniform({1, 2, T, 4}, 81, -2, 2);
  Tensor k = testing::uniform({1, 2, T, 4}, 82, -2, 2);
  Tensor v = testing::uniform({1, 2, T, 4}, 83);
  auto [full, full_lse] = kernels::attention_forward(q, k, v, true, 0.0, {4, 4});
  Tensor q2 = q.narrow(2, h, h);
  auto [out, lse] = kernels::attention_forward(q2, k.narrow(2, h, h), v.narrow(2, h, h), true);
  auto [ob, lb] = kernels::attention_forward(q2, k.narrow(2, 0, h), v.narrow(2, 0, h), false);
  kernels::attention_merge_(out, lse, ob.to(DType::BF16).to(DType::F32), lb);
  // The earlier block's output went through bf16 (8 bits) on its way here.
  EXPECT_TRUE(testing::all_close(testing::to_doubles(out),
                                 testing::to_doubles(full.narrow(2, h, h)), 1e-2, 1e-3));
  EXPECT_TRUE(testing::all_close(testing::to_doubles(lse),
                                 testing::to_doubles(full_lse.narrow(2, h, h)), 1e-6, 1e-6));
  // The same merge in exact f32, and with a bf16 block passed directly.
  auto [out2, lse2] = kernels::attention_forward(q2, k.narrow(2, h, h), v.narrow(2, h, h), true);
  kernels::attention_merge_(out2, lse2, ob, lb);
  EXPECT_TRUE(testing::all_close(testing::to_doubles(out2),
                                 testing::to_doubles(full.narrow(2, h, h)), 1e-5, 1e-6));
  auto [out3, lse3] = kernels::attention_forward(q2, k.narrow(2, h, h), v.narrow(2, h, h), true);
  kernels::attention_merge_(out3, lse3, ob.to(DType::BF16), lb);
  EXPECT_EQ(testing::to_doubles(out3), testing::to_doubles(out));
}

TEST(Attention, ForwardAccumulateOverKeyBlocksEqualsFullAttention) {
  // attention_forward_accumulate_ is forward + merge with the block output
  // kept in f32: walking the keys block by block from (zeros, -inf) gives
  // the attention over all of them. Half inputs are widened exactly, so the
  // float64 reference sees the same values.
  const double inf = std::numeric_limits<double>::infinity();
  const int64_t B = 2, H = 2, T = 26, D = 8;
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor q = testing::uniform({B, H, T, D}, 91, -2, 2, dt);
    Tensor k = testing::uniform({B, H, T, D}, 92, -2, 2, dt);
    Tensor v = testing::uniform({B, H, T, D}, 93, -1, 1, dt);
    const Doubles kd = testing::to_doubles(k), vd = testing::to_doubles(v);
    // The reference: queries [T - Tq, T) (their own layout) against all T keys.
    auto check = [&](const Tensor& qs, bool causal, const Tensor& out, const Tensor& lse) {
      const int64_t Tq = qs.size(2);
      const Dims s{B, H, Tq, T, D};
      Doubles ro, rl;
      naive_attention(testing::to_doubles(qs), kd, vd, s, causal, default_scale(s), &ro, &rl);
      // f32 blocks, one f32 rescale per merge: as attention_tolerance.
      EXPECT_TRUE(testing::all_close(testing::to_doubles(out), ro, 2e-5, 2e-6));
      EXPECT_TRUE(testing::all_close(testing::to_doubles(lse), rl, 2e-6, 2e-6));
    };
    auto keys = [&](int64_t j0, int64_t n) {
      return std::pair<Tensor, Tensor>{k.narrow(2, j0, n), v.narrow(2, j0, n)};
    };
    {
      SCOPED_TRACE("bidirectional: keys [0, 11) then [11, 26)");
      Tensor out = zeros({B, H, T, D});    // (B, H, T, D)
      Tensor lse = full({B, H, T}, -inf);  // (B, H, T)
      auto [k1, v1] = keys(0, 11);
      auto [k2, v2] = keys(11, T - 11);
      kernels::attention_forward_accumulate_(q, k1, v1, false, out, lse);
      kernels::attention_forward_accumulate_(q, k2, v2, false, out, lse);
      check(q, false, out, lse);
    }
    {
      // A ring step of causal attention: the later half of the queries sees
      // the earlier keys in full and its own keys causally; the diagonal
      // block first, as a ring starts from the rank's own block.
      SCOPED_TRACE("causal: queries [13, 26), keys [13, 26) causally, then [0, 13)");
      const int64_t h = T / 2;
      Tensor q2 = q.narrow(2, h, T - h);
      Tensor out = zeros({B, H, T - h, D});    // (B, H, Tq, D)
      Tensor lse = full({B, H, T - h}, -inf);  // (B, H, Tq)
      auto [k1, v1] = keys(0, h);
      auto [k2, v2] = keys(h, T - h);
      kernels::attention_forward_accumulate_(q2, k2, v2, true, out, lse);
      kernels::attention_forward_accumulate_(q2, k1, v1, false, out, lse);
      check(q2, true, out, lse);
    }
    {
      SCOPED_TRACE("causal, Tq < Tk: the last 5 queries, keys [0, 10) then [10, 26) causally");
      Tensor q3 = q.narrow(2, T - 5, 5);
      Tensor out = zeros({B, H, 5, D});
      Tensor lse = full({B, H, 5}, -inf);
      auto [k1, v1] = keys(0, 10);
      auto [k2, v2] = keys(10, T - 10);
      kernels::attention_forward_accumulate_(q3, k1, v1, false, out, lse);
      kernels::attention_forward_accumulate_(q3, k2, v2, true, out, lse);
      check(q3, true, out, lse);
    }
  }
  // The running pair must be f32 and shaped like q.
  Tensor q = zeros({1, 2, 8, 4}), k = zeros({1, 2, 8, 4});
  Tensor out16 = zeros({1, 2, 8, 4}, DType::BF16), lse = zeros({1, 2, 8});
  EXPECT_KEEL_ERROR(kernels::attention_forward_accumulate_(q, k, k, false, out16, lse),
                    "attention_forward_accumulate_", "f32", "bf16");
  Tensor out = zeros({1, 2, 8, 4}), lse_bad = zeros({1, 2, 7});
  EXPECT_KEEL_ERROR(kernels::attention_forward_accumulate_(q, k, k, false, out, lse_bad),
                    "attention_forward_accumulate_", "lse", "(1, 2, 7)", "(1, 2, 8)");
}

TEST(Attention, BadInputsNameShapes) {
  Tensor q = zeros({1, 2, 8, 4}), k = zeros({1, 2, 8, 4}), v = zeros({1, 2, 8, 4});
  EXPECT_KEEL_ERROR(attention(zeros({2, 8, 4}), k, v, false), "attention", "q", "(2, 8, 4)");
  EXPECT_KEEL_ERROR(attention(q, k, zeros({1, 2, 9, 4}), false), "attention", "(1, 2, 8, 4)",
                    "(1, 2, 9, 4)");
  EXPECT_KEEL_ERROR(attention(q, zeros({1, 2, 8, 5}), zeros({1, 2, 8, 5}), false), "attention",
                    "(1, 2, 8, 4)", "(1, 2, 8, 5)", "B, H and D");
  EXPECT_KEEL_ERROR(attention(q, zeros({1, 3, 8, 4}), zeros({1, 3, 8, 4}), false), "attention",
                    "(1, 3, 8, 4)");
  EXPECT_KEEL_ERROR(attention(q, zeros({1, 2, 4, 4}), zeros({1, 2, 4, 4}), true), "causal",
                    "Tq <= Tk", "(1, 2, 8, 4)", "(1, 2, 4, 4)");
  EXPECT_KEEL_ERROR(attention(q, k.to(DType::BF16), v, false), "attention", "f32", "bf16");
  EXPECT_KEEL_ERROR(attention(zeros({1, 2, 8, 4}, DType::I64), k, v, false), "attention", "i64");
  EXPECT_KEEL_ERROR(kernels::attention_forward(q, k, v, false, 0.0, {0, 64}), "block sizes");
  auto [out, lse] = kernels::attention_forward(q, k, v, false);
  EXPECT_KEEL_ERROR(
      kernels::attention_backward(q, k, v, out, lse, zeros({1, 2, 7, 4}), Tensor(), false), "dout",
      "(1, 2, 7, 4)", "(1, 2, 8, 4)");
  EXPECT_KEEL_ERROR(kernels::attention_backward(q, k, v, out, zeros({1, 2, 8}, DType::BF16), out,
                                                Tensor(), false),
                    "lse", "bf16", "(1, 2, 8)");
  Tensor acc = zeros({1, 2, 8, 4}), acc_lse = zeros({1, 2, 8});
  EXPECT_KEEL_ERROR(kernels::attention_merge_(acc, acc_lse, zeros({1, 2, 6, 4}), zeros({1, 2, 6})),
                    "attention_merge_", "(1, 2, 6, 4)", "(1, 2, 8, 4)");
  Tensor acc16 = zeros({1, 2, 8, 4}, DType::BF16);
  EXPECT_KEEL_ERROR(kernels::attention_merge_(acc16, acc_lse, out, lse), "attention_merge_", "f32",
                    "bf16");
}

// Without dropout (eval, or p = 0) the unfused composition is the fused op
// up to f32 summation order, forward and backward; against the reference too.
TEST(AttentionUnfused, WithoutDropoutEqualsFusedAttention) {
  for (bool causal : {false, true})
    for (const Dims& s : {Dims{2, 3, 7, 7, 4}, Dims{1, 2, 5, 12, 4}}) {
      SCOPED_TRACE(::testing::Message() << "causal=" << causal << " Tq=" << s.Tq << " Tk=" << s.Tk);
      Tensor q = leaf({s.B, s.H, s.Tq, s.D}, 31, -1.5, 1.5);
      Tensor k = leaf({s.B, s.H, s.Tk, s.D}, 32, -1.5, 1.5);
      Tensor v = leaf({s.B, s.H, s.Tk, s.D}, 33);
      Tensor dout = testing::uniform({s.B, s.H, s.Tq, s.D}, 34);
      Generator gen(1);
      std::vector<Doubles> grads[2];
      Tensor outs[2];
      for (int path = 0; path < 2; ++path) {
        for (Tensor* t : {&q, &k, &v}) t->set_grad(Tensor());
        outs[path] = path == 0 ? attention(q, k, v, causal).first
                               : attention_unfused(q, k, v, causal, 0.0, 0.3, false, gen);
        outs[path].backward(dout);
        for (Tensor* t : {&q, &k, &v}) grads[path].push_back(testing::to_doubles(t->grad()));
      }
      // f32 sums in a different order (blocked online softmax vs whole rows).
      EXPECT_TRUE(testing::all_close(testing::to_doubles(outs[1]), testing::to_doubles(outs[0]),
                                     2e-5, 2e-6));
      for (int i = 0; i < 3; ++i)
        EXPECT_TRUE(testing::all_close(grads[1][size_t(i)], grads[0][size_t(i)], 1e-4, 1e-5))
            << "grad " << i;
      EXPECT_EQ(gen.offset(), 0u);  // eval draws no mask
      // p = 0 in training is the same attention.
      EXPECT_EQ(testing::to_doubles(attention_unfused(q, k, v, causal, 0.0, 0.0, true, gen)),
                testing::to_doubles(attention_unfused(q, k, v, causal, 0.0, 0.3, false, gen)));
      check_op(
          [&](const std::vector<Tensor>& in) {
            return attention_unfused(in[0], in[1], in[2], causal, 0.7, 0.0, true, gen);
          },
          [&](const std::vector<Doubles>& in) {
            Doubles out, lse;
            naive_attention(in[0], in[1], in[2], s, causal, 0.7, &out, &lse);
            return out;
          },
          {q, k, v}, attention_tolerance());
    }
}

// With dropout, the probabilities (B, H, Tq, Tk) are masked by the Philox
// stream at the generator's (seed, offset); forward and the gradients of
// q, k, v (finite differences of the reference with that fixed mask).
TEST(AttentionUnfused, DropoutOnProbabilitiesMatchesReferenceWithItsMask) {
  const double p = 0.3;
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    const Dims s{2, 2, 6, 6, 3};
    Tensor q = leaf({s.B, s.H, s.Tq, s.D}, 41, -1.5, 1.5);
    Tensor k = leaf({s.B, s.H, s.Tk, s.D}, 42, -1.5, 1.5);
    Tensor v = leaf({s.B, s.H, s.Tk, s.D}, 43);
    Doubles mask(size_t(s.B * s.H * s.Tq * s.Tk));
    for (size_t i = 0; i < mask.size(); ++i)
      mask[i] = philox_uniform_at(5, 2, i) > p ? 1.0 / (1.0 - p) : 0.0;
    Tensor out = check_op(
        [&](const std::vector<Tensor>& in) {
          Generator gen;
          gen.set_state(5, 2);
          return attention_unfused(in[0], in[1], in[2], causal, 0.0, p, true, gen);
        },
        [&](const std::vector<Doubles>& in) {
          Doubles o, lse;
          naive_attention(in[0], in[1], in[2], s, causal, default_scale(s), &o, &lse, &mask);
          return o;
        },
        {q, k, v}, attention_tolerance());
    // The mask matters: the output is not the eval output.
    EXPECT_NE(testing::to_doubles(out), testing::to_doubles(attention(q, k, v, causal).first));
  }
}

TEST(AttentionUnfused, BadInputsNameShapes) {
  Tensor q = zeros({1, 2, 8, 4});
  Generator gen(1);
  EXPECT_KEEL_ERROR(
      attention_unfused(q, zeros({1, 2, 8, 5}), zeros({1, 2, 8, 5}), false, 0.0, 0.1, true, gen),
      "attention_unfused", "(1, 2, 8, 4)", "(1, 2, 8, 5)");
  EXPECT_KEEL_ERROR(
      attention_unfused(q, zeros({1, 2, 4, 4}), zeros({1, 2, 4, 4}), true, 0.0, 0.1, true, gen),
      "attention_unfused", "Tq <= Tk");
  EXPECT_KEEL_ERROR(attention_unfused(q, q, q, true, 0.0, 1.0, true, gen), "dropout", "[0, 1)");
}

}  // namespace
}  // namespace keel
