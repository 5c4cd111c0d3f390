// Differentiable collectives under mpirun: parallel == serial. Every rank
// builds every rank's inputs from per-rank seeds, runs the op across the
// communicator, and checks the forward output and its own input gradient
// against the single-process computation of the same full tensors with
// ordinary keel ops (narrow, concat, add, mul, sum). Each test runs on the
// world and, with 4 ranks, on pairs of ranks from a split.
#include "parallel/collectives.h"

#include <gtest/gtest.h>

#include <functional>

#include "tests/testing/gradcheck.h"

namespace keel::parallel {
namespace {

using testing::all_close;
using testing::to_doubles;

// Moving data is exact; where values are summed over ranks, MPI's order and
// the serial order differ in the last bits of f32: 1e-6 relative.
constexpr double kRtol = 1e-6, kAtol = 1e-6;

void on_each_comm(const std::function<void(Communicator&)>& body) {
  auto world = mpi_world();
  {
    SCOPED_TRACE("world");
    body(*world);
  }
  if (world->size() >= 4 && world->size() % 2 == 0) {
    SCOPED_TRACE("pairs");
    auto pairs = world->split(world->rank() / 2, world->rank(), "pair");
    body(*pairs);
  }
}

uint64_t seed(int rank, int salt) { return 500 + 31 * uint64_t(rank) + 1009 * uint64_t(salt); }

Shape with_dim(Shape s, int64_t dim, int64_t v) {
  s[size_t(dim)] = v;
  return s;
}

// The gradient of `loss` with respect to `x` after backward.
testing::Doubles grad_of(const Tensor& x) {
  EXPECT_TRUE(x.grad().defined());
  return x.grad().defined() ? to_doubles(x.grad()) : testing::Doubles{};
}

TEST(Collectives, CopyToRegionAllReducesTheGradient) {
  on_each_comm([](Communicator& comm) {
    const int n = comm.size(), me = comm.rank();
    const Shape s = {3, 4};
    Tensor x = testing::leaf(s, 7);
    Tensor y = copy_to_region(x, comm);
    EXPECT_EQ(to_doubles(y), to_doubles(x));
    sum(y * testing::uniform(s, seed(me, 1))).backward();

    Tensor xs = testing::leaf(s, 7);
    Tensor loss = zeros({});
    for (int r = 0; r < n; ++r) loss = loss + sum(xs * testing::uniform(s, seed(r, 1)));
    loss.backward();
    EXPECT_TRUE(all_close(grad_of(x), grad_of(xs), kRtol, kAtol));
  });
}

TEST(Collectives, ReduceFromRegionSumsForwardPassesGradient) {
  on_each_comm([](Communicator& comm) {
    const int n = comm.size(), me = comm.rank();
    const Shape s = {5, 3};
    const Tensor w = testing::uniform(s, 99);
    Tensor x = testing::leaf(s, seed(me, 2));
    Tensor y = reduce_from_region(x * 1.5, comm);
    Tensor loss = sum(y * w);
    loss.backward();

    std::vector<Tensor> xs;
    Tensor ys = zeros(s);
    for (int r = 0; r < n; ++r) {
      xs.push_back(testing::leaf(s, seed(r, 2)));
      ys = ys + xs.back() * 1.5;
    }
    Tensor serial = sum(ys * w);
    serial.backward();
    EXPECT_TRUE(all_close(to_doubles(y), to_doubles(ys), kRtol, kAtol));
    EXPECT_NEAR(loss.item(), serial.item(), 1e-5 * std::abs(serial.item()) + 1e-6);
    EXPECT_TRUE(all_close(grad_of(x), grad_of(xs[size_t(me)]), kRtol, kAtol));
  });
}

TEST(Collectives, ScatterToRegionKeepsOwnChunkGathersGradient) {
  on_each_comm([](Communicator& comm) {
    const int n = comm.size(), me = comm.rank();
    for (int64_t dim : {0, 1, 2, -1}) {
      SCOPED_TRACE("dim " + std::to_string(dim));
      const Shape full_shape = {2 * n, 3 * n, 2 * n};
      const int64_t d = dim < 0 ? dim + 3 : dim;
      const int64_t c = full_shape[size_t(d)] / n;
      const Shape chunk = with_dim(full_shape, d, c);
      Tensor x = testing::leaf(full_shape, 8);
      Tensor y = scatter_to_region(x, dim, comm);
      EXPECT_EQ(y.sizes(), chunk);
      EXPECT_EQ(to_doubles(y), to_doubles(x.narrow(d, me * c, c)));
      sum(y * testing::uniform(chunk, seed(me, 3))).backward();

      Tensor xs = testing::leaf(full_shape, 8);
      Tensor loss = zeros({});
      for (int r = 0; r < n; ++r)
        loss = loss + sum(narrow(xs, d, r * c, c) * testing::uniform(chunk, seed(r, 3)));
      loss.backward();
      EXPECT_TRUE(all_close(grad_of(x), grad_of(xs), 0.0, 0.0));
    }
  });
}

TEST(Collectives, GatherFromRegionConcatenatesTakesOwnGradientChunk) {
  on_each_comm([](Communicator& comm) {
    const int n = comm.size(), me = comm.rank();
    for (int64_t dim : {0, 1, 2, -1}) {
      SCOPED_TRACE("dim " + std::to_string(dim));
      const Shape chunk = {2, 3, 4};
      const int64_t d = dim < 0 ? dim + 3 : dim;
      const Shape full_shape = with_dim(chunk, d, chunk[size_t(d)] * n);
      const Tensor w = testing::uniform(full_shape, 98);  // the same on every rank
      Tensor x = testing::leaf(chunk, seed(me, 4));
      Tensor y = gather_from_region(x, dim, comm);
      sum(y * w).backward();

      std::vector<Tensor> xs;
      for (int r = 0; r < n; ++r) xs.push_back(testing::leaf(chunk, seed(r, 4)));
      Tensor ys = concat(xs, d);
      sum(ys * w).backward();
      EXPECT_EQ(y.sizes(), full_shape);
      EXPECT_EQ(to_doubles(y), to_doubles(ys));
      EXPECT_TRUE(all_close(grad_of(x), grad_of(xs[size_t(me)]), 0.0, 0.0));
    }
  });
}

TEST(Collectives, ReduceScatterToRegionAndItsAllGatherBackward) {
  on_each_comm([](Communicator& comm) {
    const int n = comm.size(), me = comm.rank();
    for (int64_t dim : {0, 1, -1}) {
      SCOPED_TRACE("dim " + std::to_string(dim));
      const Shape full_shape = {2 * n, n, 3 * n};
      const int64_t d = dim < 0 ? dim + 3 : dim;
      const int64_t c = full_shape[size_t(d)] / n;
      const Shape chunk = with_dim(full_shape, d, c);
      Tensor x = testing::leaf(full_shape, seed(me, 5));
      Tensor y = reduce_scatter_to_region(x, dim, comm);
      Tensor loss = sum(y * testing::uniform(chunk, seed(me, 6)));
      loss.backward();

      std::vector<Tensor> xs;
      Tensor total = zeros(full_shape);
      for (int r = 0; r < n; ++r) {
        xs.push_back(testing::leaf(full_shape, seed(r, 5)));
        total = total + xs.back();
      }
      Tensor serial = zeros({});
      for (int r = 0; r < n; ++r)
        serial = serial + sum(narrow(total, d, r * c, c) * testing::uniform(chunk, seed(r, 6)));
      serial.backward();
      EXPECT_EQ(y.sizes(), chunk);
      EXPECT_TRUE(all_close(to_doubles(y), to_doubles(narrow(total, d, me * c, c)), kRtol, kAtol));
      EXPECT_TRUE(all_close(grad_of(x), grad_of(xs[size_t(me)]), kRtol, kAtol));
    }
  });
}

TEST(Collectives, GatherFromSequenceRegionReduceScattersGradient) {
  on_each_comm([](Communicator& comm) {
    const int n = comm.size(), me = comm.rank();
    for (int64_t dim : {0, 1, 2}) {
      SCOPED_TRACE("dim " + std::to_string(dim));
      const Shape chunk = {3, 2, 4};
      const Shape full_shape = with_dim(chunk, dim, chunk[size_t(dim)] * n);
      Tensor x = testing::leaf(chunk, seed(me, 7));
      Tensor y = gather_from_sequence_region(x, dim, comm);
      sum(y * testing::uniform(full_shape, seed(me, 8))).backward();

      std::vector<Tensor> xs;
      for (int r = 0; r < n; ++r) xs.push_back(testing::leaf(chunk, seed(r, 7)));
      Tensor ys = concat(xs, dim);
      Tensor serial = zeros({});
      for (int r = 0; r < n; ++r)
        serial = serial + sum(ys * testing::uniform(full_shape, seed(r, 8)));
      serial.backward();
      EXPECT_EQ(to_doubles(y), to_doubles(ys));
      EXPECT_TRUE(all_close(grad_of(x), grad_of(xs[size_t(me)]), kRtol, kAtol));
    }
  });
}

TEST(Collectives, AllToAllRegionExchangesDimsAndInvertsInBackward) {
  on_each_comm([](Communicator& comm) {
    const int n = comm.size(), me = comm.rank();
    const Shape s = {2 * n, 3, n};
    const std::vector<std::pair<int64_t, int64_t>> pairs = {{0, 1}, {0, 2}, {2, 0}, {2, 1}, {0, 0}};
    for (auto [sd, cd] : pairs) {
      SCOPED_TRACE("split " + std::to_string(sd) + " concat " + std::to_string(cd));
      const int64_t cs = s[size_t(sd)] / n;
      Shape out_shape = with_dim(s, sd, cs);
      out_shape[size_t(cd)] *= n;
      Tensor x = testing::leaf(s, seed(me, 9));
      Tensor y = all_to_all_region(x, sd, cd, comm);
      EXPECT_EQ(y.sizes(), out_shape);
      sum(y * testing::uniform(out_shape, seed(me, 10))).backward();

      // Serial: rank j receives chunk j of every rank i, placed at i along cd.
      std::vector<Tensor> xs;
      for (int i = 0; i < n; ++i) xs.push_back(testing::leaf(s, seed(i, 9)));
      Tensor serial = zeros({});
      Tensor mine;
      for (int j = 0; j < n; ++j) {
        std::vector<Tensor> parts;
        for (int i = 0; i < n; ++i) parts.push_back(narrow(xs[size_t(i)], sd, j * cs, cs));
        Tensor yj = concat(parts, cd);
        if (j == me) mine = yj;
        serial = serial + sum(yj * testing::uniform(out_shape, seed(j, 10)));
      }
      serial.backward();
      EXPECT_EQ(to_doubles(y), to_doubles(mine));
      EXPECT_TRUE(all_close(grad_of(x), grad_of(xs[size_t(me)]), 0.0, 0.0));
    }
  });
}

TEST(Collectives, AllToAllRowsWithUnevenCounts) {
  on_each_comm([](Communicator& comm) {
    const int n = comm.size(), me = comm.rank();
    // Rank i sends (i + 2j + 1) % 3 rows to rank j; some send none.
    auto rows = [](int i, int j) { return int64_t((i + 2 * j + 1) % 3); };
    const int64_t C = 5;
    auto sent_by = [&](int i) {
      int64_t t = 0;
      for (int j = 0; j < n; ++j) t += rows(i, j);
      return t;
    };
    std::vector<int64_t> send_rows, recv_rows;
    for (int j = 0; j < n; ++j) send_rows.push_back(rows(me, j));
    for (int i = 0; i < n; ++i) recv_rows.push_back(rows(i, me));
    Tensor x = testing::leaf({sent_by(me), C}, seed(me, 11));
    Tensor y = all_to_all_rows(x, send_rows, recv_rows, comm);
    int64_t got = 0;
    for (int64_t r : recv_rows) got += r;
    EXPECT_EQ(y.sizes(), (Shape{got, C}));
    sum(y * testing::uniform({got, C}, seed(me, 12))).backward();

    std::vector<Tensor> xs;
    for (int i = 0; i < n; ++i) xs.push_back(testing::leaf({sent_by(i), C}, seed(i, 11)));
    Tensor serial = zeros({});
    Tensor mine;
    for (int j = 0; j < n; ++j) {
      std::vector<Tensor> parts;
      int64_t total = 0;
      for (int i = 0; i < n; ++i) {
        int64_t off = 0;
        for (int k = 0; k < j; ++k) off += rows(i, k);
        if (rows(i, j) > 0) parts.push_back(narrow(xs[size_t(i)], 0, off, rows(i, j)));
        total += rows(i, j);
      }
      Tensor yj = parts.empty() ? zeros({0, C}) : concat(parts, 0);
      if (j == me) mine = yj;
      if (total > 0) serial = serial + sum(yj * testing::uniform({total, C}, seed(j, 12)));
    }
    serial.backward();
    EXPECT_EQ(to_doubles(y), to_doubles(mine));
    EXPECT_TRUE(all_close(grad_of(x), grad_of(xs[size_t(me)]), 0.0, 0.0));
  });
}

TEST(Collectives, ChainedOpsMatchSerialLikeATensorParallelMlp) {
  // Column-parallel then row-parallel linear (Megatron's MLP split), whose
  // serial form is y = (x W1^T) W2^T: copy_to_region before the column
  // shard, reduce_from_region after the row shard.
  on_each_comm([](Communicator& comm) {
    const int n = comm.size(), me = comm.rank();
    const int64_t B = 3, C = 4, H = 2 * n;
    const int64_t h = H / n;
    Tensor x = testing::leaf({B, C}, 21);
    Tensor w1 = testing::leaf({H, C}, 22), w2 = testing::leaf({C, H}, 23);
    Tensor w1_shard = narrow(w1, 0, me * h, h).detach().clone().set_requires_grad(true);
    Tensor w2_shard = narrow(w2, 1, me * h, h).detach().clone().set_requires_grad(true);
    Tensor hidden = matmul(copy_to_region(x, comm), transpose(w1_shard, 0, 1));  // (B, h)
    Tensor y = reduce_from_region(matmul(tanh(hidden), transpose(w2_shard, 0, 1)), comm);
    const Tensor target = testing::uniform({B, C}, 24);
    Tensor loss = sum(square(y - target));
    loss.backward();

    Tensor xs = testing::leaf({B, C}, 21);
    Tensor serial =
        sum(square(matmul(tanh(matmul(xs, transpose(w1, 0, 1))), transpose(w2, 0, 1)) - target));
    serial.backward();
    // fp32 on CPU, parallel == serial: 1e-5 relative.
    EXPECT_NEAR(loss.item(), serial.item(), 1e-5 * std::abs(serial.item()));
    EXPECT_TRUE(all_close(grad_of(x), grad_of(xs), 1e-5, 1e-6));
    EXPECT_TRUE(
        all_close(grad_of(w1_shard), to_doubles(w1.grad().narrow(0, me * h, h)), 1e-5, 1e-6));
    EXPECT_TRUE(
        all_close(grad_of(w2_shard), to_doubles(w2.grad().narrow(1, me * h, h)), 1e-5, 1e-6));
  });
}

TEST(Collectives, SixteenBitTensorsGatherExactly) {
  on_each_comm([](Communicator& comm) {
    const int n = comm.size(), me = comm.rank();
    std::vector<Tensor> xs;
    for (int r = 0; r < n; ++r) xs.push_back(testing::uniform({4, 3}, seed(r, 13)).to(DType::BF16));
    Tensor y = gather_from_region(xs[size_t(me)], 1, comm);
    EXPECT_EQ(y.dtype(), DType::BF16);
    EXPECT_EQ(to_doubles(y), to_doubles(concat(xs, 1)));
  });
}

TEST(Collectives, NoGradForwardRecordsNothing) {
  auto world = mpi_world();
  NoGradGuard guard;
  Tensor x = testing::leaf({2, 2}, 3);
  Tensor y = reduce_from_region(x, *world);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(all_close(to_doubles(y), to_doubles(x * double(world->size())), kRtol, kAtol));
}

TEST(Collectives, RefuseIndivisibleDimsAndBadRowCounts) {
  auto world = mpi_world();
  const int n = world->size();
  Tensor x = zeros({3, n * 2 + 1});
  EXPECT_KEEL_ERROR(scatter_to_region(x, 1, *world), "scatter_to_region", "dim 1",
                    "not divisible by the", "communicator 'world'");
  EXPECT_KEEL_ERROR(reduce_scatter_to_region(x, -1, *world), "reduce_scatter_to_region",
                    "not divisible");
  EXPECT_KEEL_ERROR(all_to_all_region(x, 1, 0, *world), "all_to_all_region", "not divisible");
  std::vector<int64_t> ones(size_t(n), 1);
  EXPECT_KEEL_ERROR(all_to_all_rows(zeros({n + 1, 2}), ones, ones, *world), "all_to_all_rows",
                    "send_rows sum to");
  EXPECT_KEEL_ERROR(
      all_to_all_rows(zeros({n, 2}), ones, std::vector<int64_t>(size_t(n) + 1, 1), *world),
      "recv_rows has");
  // A non-contiguous view is fine: the op makes its own dense buffer.
  Tensor t = testing::uniform({2 * n, 3}, 4).transpose(0, 1);
  Tensor g = gather_from_region(t, 0, *world);
  EXPECT_EQ(g.sizes(), (Shape{3 * n, 2 * n}));
}

}  // namespace
}  // namespace keel::parallel
