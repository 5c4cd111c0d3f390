// Vocab-parallel cross-entropy under mpirun against the serial op. Every
// rank builds the same full (N, V) logits and targets from fixed seeds, runs
// the serial keel::cross_entropy on all of it and the vocab-parallel op on
// its own column shard, and compares the loss and its shard's gradient with
// the matching columns of the serial gradient. Each test runs with tp = the
// world and, when the world has 4 or more (even) ranks, with tp = each half.
// At one rank tp is a group of one and the op must reduce to the serial one.
#include "parallel/vocab_parallel_cross_entropy.h"

#include <gtest/gtest.h>

#include <functional>
#include <limits>

#include "tests/testing/gradcheck.h"

namespace keel::parallel {
namespace {

using testing::all_close;
using testing::Doubles;
using testing::to_doubles;

// The exp-sums are added per shard and then over ranks, the serial op adds
// them in one row-order pass: the f32 results differ in the last bits.
constexpr double kLossRtol = 1e-6;
// Gradients are exp(x - lse) with lse off by those bits: 1e-6 relative, and
// 1e-7 absolute for entries near 0 (the p - eps/V cancellation).
constexpr double kGradRtol = 1e-6, kGradAtol = 1e-7;

void on_each_tp(const std::function<void(Communicator&)>& body) {
  auto world = mpi_world();
  {
    SCOPED_TRACE("tp = world");
    body(*world);
  }
  const int w = world->size();
  if (w >= 4 && w % 2 == 0) {
    SCOPED_TRACE("tp = half of the world");
    auto half = world->split(world->rank() / (w / 2), world->rank(), "tp");
    body(*half);
  }
}

struct Case {
  const char* name;
  Shape lead;                // the leading dims of the logits: (N) or (B, T)
  int64_t vl;                // classes per rank
  int ignore_every = 0;      // every k-th row (from row 1) is ignored; 0: none
  bool all_ignored = false;  // every row ignored
  double eps = 0.0;          // label smoothing
  DType target_dtype = DType::I64;
  int64_t ignore_index = -100;
};

// Deterministic targets spread over every rank's range, some ignored.
Tensor make_targets(const Case& c, int64_t V) {
  const int64_t n = shape_numel(c.lead);
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    t[size_t(r)] = (r * 7919 + 13) % V;
    if (c.all_ignored || (c.ignore_every > 0 && r % c.ignore_every == 1))
      t[size_t(r)] = c.ignore_index;
  }
  return from_vector(t, c.lead).to(c.target_dtype);
}

Shape with_classes(Shape lead, int64_t v) {
  lead.push_back(v);
  return lead;
}

void expect_matches_serial(const Case& c, Communicator& tp) {
  SCOPED_TRACE(c.name);
  const int64_t V = c.vl * tp.size(), start = tp.rank() * c.vl;
  const int64_t dim = int64_t(c.lead.size());
  const Tensor full = testing::uniform(with_classes(c.lead, V), 41, -4.0, 4.0);  // (..., V)
  const Tensor targets = make_targets(c, V);

  Tensor xs = full.clone();  // (..., V)
  xs.set_requires_grad();
  Tensor serial = cross_entropy(xs, targets, c.ignore_index, c.eps);
  (serial * 2.5).backward();  // a non-unit upstream gradient checks the dloss scaling

  Tensor xl = full.narrow(dim, start, c.vl).clone();  // (..., Vl)
  xl.set_requires_grad();
  Tensor loss = vocab_parallel_cross_entropy(xl, targets, tp, c.ignore_index, c.eps);
  (loss * 2.5).backward();

  ASSERT_EQ(loss.dim(), 0);
  ASSERT_EQ(loss.dtype(), DType::F32);
  EXPECT_TRUE(all_close(to_doubles(loss), to_doubles(serial), kLossRtol, 0.0)) << "loss";
  ASSERT_TRUE(xl.grad().defined());
  EXPECT_EQ(xl.grad().sizes(), xl.sizes());
  EXPECT_TRUE(all_close(to_doubles(xl.grad()), to_doubles(xs.grad().narrow(dim, start, c.vl)),
                        kGradRtol, kGradAtol))
      << "gradient of this rank's shard";

  // Every rank returns the same value bit for bit: it is computed from the
  // same all-reduced buffers in the same order.
  Tensor all = empty({int64_t(tp.size())}, DType::F32);  // (tp)
  tp.all_gather_(loss.contiguous().view({1}), all);
  for (double v : to_doubles(all)) EXPECT_EQ(v, loss.item());

  if (c.all_ignored) {
    EXPECT_EQ(loss.item(), 0.0);
    for (double g : to_doubles(xl.grad())) EXPECT_EQ(g, 0.0);
  }
}

TEST(VocabParallelCrossEntropy, MatchesSerial) {
  const Case cases[] = {
      {"plain", {12}, 16},
      {"ignore_index rows", {12}, 16, 3},
      {"label smoothing 0.1", {12}, 16, 0, false, 0.1},
      {"ignore_index and label smoothing", {12}, 16, 3, false, 0.1},
      {"all rows ignored", {6}, 16, 0, true, 0.1},
      {"V not a power of two, i32 targets", {10}, 37, 4, false, 0.1, DType::I32},
      {"(B, T, Vl) logits, ignore_index 0", {2, 5}, 13, 2, false, 0.2, DType::I64, 0},
      {"full label smoothing", {7}, 9, 0, false, 1.0},
      // Past kParallelGrain (core/strided.h): the OpenMP row loops run threaded.
      {"rows over threads", {64}, 520, 5, false, 0.1},
  };
  on_each_tp([&](Communicator& tp) {
    for (const Case& c : cases) expect_matches_serial(c, tp);
  });
}

// A padded vocabulary masks its last classes with -inf, and at tp > 1 a
// rank may hold nothing else (GPT pads to a multiple of 128 and splits it):
// that rank adds nothing, and the loss and gradients are the serial ones.
TEST(VocabParallelCrossEntropy, AShardOfMaskedClassesOnlyAddsNothing) {
  on_each_tp([](Communicator& tp) {
    const int64_t vl = 8, V = vl * tp.size(), N = 6;
    const int64_t real = tp.size() == 1 ? vl - 3 : vl;      // the first shard's classes only
    Tensor full = testing::uniform({N, V}, 47, -3.0, 3.0);  // (N, V)
    {
      NoGradGuard no_grad;
      full.narrow(1, real, V - real).fill_(-std::numeric_limits<double>::infinity());
    }
    const Tensor targets = from_vector<int64_t>({0, real - 1, 2, -100, 1, 3}, {N});
    Tensor xs = full.clone();
    xs.set_requires_grad();
    Tensor serial = cross_entropy(xs, targets, -100, 0.0);
    serial.backward();
    Tensor xl = full.narrow(1, tp.rank() * vl, vl).clone();  // (N, Vl)
    xl.set_requires_grad();
    Tensor loss = vocab_parallel_cross_entropy(xl, targets, tp, -100, 0.0);
    loss.backward();
    EXPECT_TRUE(std::isfinite(loss.item()));
    EXPECT_TRUE(all_close(to_doubles(loss), to_doubles(serial), kLossRtol, 0.0));
    EXPECT_TRUE(all_close(to_doubles(xl.grad()),
                          to_doubles(xs.grad().narrow(1, tp.rank() * vl, vl)), kGradRtol,
                          kGradAtol))
        << "gradient of this rank's shard (zero on masked classes)";
  });
}

// Logits far from 0: the max shift keeps exp and the smoothing sum finite.
TEST(VocabParallelCrossEntropy, LargeLogitsStayFinite) {
  on_each_tp([](Communicator& tp) {
    const int64_t vl = 8, V = vl * tp.size(), N = 4;
    const Tensor full = testing::uniform({N, V}, 43, 900.0, 1000.0);  // (N, V)
    const Tensor targets = from_vector<int64_t>({0, V - 1, V / 2, 3 % V}, {N});
    Tensor serial = cross_entropy(full, targets, -100, 0.1);
    Tensor loss =
        vocab_parallel_cross_entropy(full.narrow(1, tp.rank() * vl, vl), targets, tp, -100, 0.1);
    EXPECT_TRUE(std::isfinite(loss.item()));
    // Logits near 1000 carry f32 ulps of 6e-5 into every shifted value.
    EXPECT_TRUE(all_close(to_doubles(loss), to_doubles(serial), 1e-5, 1e-4));
  });
}

// The backward against central differences of a float64 reference that
// holds the other ranks' shards fixed (they are rebuilt from the seed).
TEST(VocabParallelCrossEntropy, GradientMatchesFiniteDifferences) {
  on_each_tp([](Communicator& tp) {
    const int64_t N = 4, vl = 5, V = vl * tp.size(), start = tp.rank() * vl;
    const double eps = 0.1;
    const int64_t ignore = -100;
    const Tensor full = testing::uniform({N, V}, 47, -2.0, 2.0);  // (N, V)
    const Doubles full_d = to_doubles(full);
    std::vector<int64_t> t = {1, ignore, V - 1, (V / 2) + 1};
    const Tensor targets = from_vector(t, {N});

    auto ref = [&](const std::vector<Doubles>& in) {
      Doubles x = full_d;
      for (int64_t r = 0; r < N; ++r)
        for (int64_t i = 0; i < vl; ++i) x[size_t(r * V + start + i)] = in[0][size_t(r * vl + i)];
      double total = 0.0;
      int64_t n_valid = 0;
      for (int64_t r = 0; r < N; ++r) {
        if (t[size_t(r)] == ignore) continue;
        const double* xr = x.data() + r * V;
        double m = -std::numeric_limits<double>::infinity(), se = 0.0, mean = 0.0;
        for (int64_t v = 0; v < V; ++v) m = std::max(m, xr[v]);
        for (int64_t v = 0; v < V; ++v) {
          se += std::exp(xr[v] - m);
          mean += xr[v] / double(V);
        }
        const double lse = m + std::log(se);
        total += lse - (1.0 - eps) * xr[t[size_t(r)]] - eps * mean;
        ++n_valid;
      }
      return Doubles{total / double(n_valid)};
    };
    Tensor xl = full.narrow(1, start, vl).clone();  // (N, Vl)
    xl.set_requires_grad();
    testing::check_op(
        [&](const std::vector<Tensor>& in) {
          return vocab_parallel_cross_entropy(in[0], targets, tp, ignore, eps);
        },
        ref, {xl});
  });
}

// bf16 logits are widened to f32 for the math; the result differs from the
// f32 run only by the rounding of the inputs and of the stored gradient.
TEST(VocabParallelCrossEntropy, Bf16LogitsWithinBf16Tolerance) {
  on_each_tp([](Communicator& tp) {
    const int64_t N = 8, vl = 24, V = vl * tp.size(), start = tp.rank() * vl;
    const Tensor full = testing::uniform({N, V}, 53, -4.0, 4.0);  // (N, V)
    Case c{"bf16", {N}, vl, 3, false, 0.1};
    const Tensor targets = make_targets(c, V);

    Tensor xs = full.clone();
    xs.set_requires_grad();
    Tensor serial = cross_entropy(xs, targets, c.ignore_index, c.eps);
    serial.backward();

    Tensor xl = full.narrow(1, start, vl).to(DType::BF16);  // (N, Vl) bf16
    xl.set_requires_grad();
    Tensor loss = vocab_parallel_cross_entropy(xl, targets, tp, c.ignore_index, c.eps);
    loss.backward();
    EXPECT_EQ(loss.dtype(), DType::F32);
    ASSERT_TRUE(xl.grad().defined());
    EXPECT_EQ(xl.grad().dtype(), DType::BF16);
    // Inputs in [-4, 4] round by at most half a bf16 ulp, 2^-7 = 7.8e-3; the
    // loss (lse minus a mix of logits) moves by at most twice that.
    EXPECT_TRUE(all_close(to_doubles(loss), to_doubles(serial), 0.0, 1.6e-2)) << "loss";
    // Each softmax term moves by a factor exp(+-2 * 7.8e-3) (1.6e-2 rel) and
    // the stored gradient rounds by 2^-9 rel; entries near 0 by 1e-4 abs.
    EXPECT_TRUE(
        all_close(to_doubles(xl.grad()), to_doubles(xs.grad().narrow(1, start, vl)), 2e-2, 1e-4))
        << "gradient";
  });
}

TEST(VocabParallelCrossEntropy, RefusesBadInput) {
  on_each_tp([](Communicator& tp) {
    const int64_t N = 3, vl = 4, V = vl * tp.size();
    const Tensor logits = testing::uniform({N, vl}, 59);  // (N, Vl)
    const Tensor targets = from_vector<int64_t>({0, 1, 2}, {N});
    using keel::testing::uniform;
    EXPECT_KEEL_ERROR(vocab_parallel_cross_entropy(zeros({}), targets, tp),
                      "vocab_parallel_cross_entropy", "non-empty vocabulary shard dim");
    EXPECT_KEEL_ERROR(vocab_parallel_cross_entropy(logits, targets.view({N, 1}), tp),
                      "targets must be i32 or i64 of shape (3,)");
    EXPECT_KEEL_ERROR(
        vocab_parallel_cross_entropy(logits, from_vector<int64_t>({0, 1, 2, 3}, {4}), tp),
        "targets must be i32 or i64 of shape (3,)");
    EXPECT_KEEL_ERROR(vocab_parallel_cross_entropy(logits, targets.to(DType::F32), tp),
                      "targets must be i32 or i64");
    EXPECT_KEEL_ERROR(vocab_parallel_cross_entropy(logits.to(DType::I32), targets, tp),
                      "logits must be f32, bf16 or f16");
    // target == V: out of range on every rank, decided from the targets alone.
    const std::string v_is = "V = " + std::to_string(V);
    EXPECT_KEEL_ERROR(
        vocab_parallel_cross_entropy(logits, from_vector<int64_t>({0, V, 1}, {N}), tp), "target ",
        "at row 1", "out of range [0, V)", v_is.c_str());
    EXPECT_KEEL_ERROR(
        vocab_parallel_cross_entropy(logits, from_vector<int64_t>({-1, 0, 1}, {N}), tp),
        "target -1 at row 0", "out of range");
    EXPECT_KEEL_ERROR(vocab_parallel_cross_entropy(logits, targets, tp, -100, -0.1),
                      "label_smoothing must be in [0, 1]");
    EXPECT_KEEL_ERROR(vocab_parallel_cross_entropy(logits, targets, tp, -100, 1.5),
                      "label_smoothing must be in [0, 1]");
    // No rank was left inside a collective: a good call still agrees.
    Tensor ok = vocab_parallel_cross_entropy(logits, targets, tp);
    EXPECT_TRUE(std::isfinite(ok.item()));
  });
}

// Shards of different widths cannot form one vocabulary: every rank sees the
// widths' max and min from the first all-reduce and refuses.
TEST(VocabParallelCrossEntropy, RefusesShardsOfDifferentWidths) {
  on_each_tp([](Communicator& tp) {
    if (tp.size() == 1) GTEST_SKIP() << "needs at least two ranks";
    const int64_t N = 2, vl = tp.rank() == 0 ? 5 : 4;
    const Tensor logits = testing::uniform({N, vl}, 61);  // (N, Vl), wider on rank 0
    const Tensor targets = from_vector<int64_t>({0, 1}, {N});
    EXPECT_KEEL_ERROR(vocab_parallel_cross_entropy(logits, targets, tp), "different widths",
                      "between 4 and 5");
  });
}

}  // namespace
}  // namespace keel::parallel
