// Communicator tests, run under mpirun at several world sizes: every
// collective and reduce op against values each rank computes locally from
// the per-rank seeds, every dtype, asynchronous overlap, uneven all-to-all,
// a send/recv ring, split, and refused inputs. The NCCL section runs only on
// a CUDA+NCCL build with one GPU per rank on the node, and skips otherwise.
#include "parallel/communicator.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <climits>
#include <cmath>

#include "tests/testing/gradcheck.h"

namespace keel::parallel {
namespace {

using testing::Doubles;
using testing::to_doubles;

const DType kAllDTypes[] = {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8};

// Small integers in [lo, hi] from a seed, as `dtype`: exact in every dtype,
// and so are their sums over a few ranks (|sum| <= 4 * 8 fits bf16's 8 bits).
Tensor small_ints(const Shape& shape, uint64_t seed, int lo, int hi, DType dtype) {
  std::vector<float> v = testing::uniform(shape, seed, lo, hi + 1).to_vector<float>();
  for (float& x : v) x = std::floor(x);
  return from_vector<float>(v, shape).to(dtype);
}

int lo_of(DType t) { return t == DType::U8 ? 0 : -8; }

uint64_t seed_of(int rank, int salt) { return 1000 + 37 * uint64_t(rank) + 7919 * uint64_t(salt); }

// The element-wise reduction over ranks 0..n-1 of each rank's tensor.
Doubles reduce_locally(int n, ReduceOp op, const std::function<Tensor(int)>& tensor_of) {
  Doubles acc = to_doubles(tensor_of(0));
  for (int r = 1; r < n; ++r) {
    Doubles v = to_doubles(tensor_of(r));
    for (size_t i = 0; i < acc.size(); ++i)
      acc[i] = op == ReduceOp::Max ? std::max(acc[i], v[i]) : acc[i] + v[i];
  }
  if (op == ReduceOp::Avg)
    for (double& a : acc) a /= n;
  return acc;
}

// Sums and maxima of small integers are exact; an average is rounded once
// into the dtype (bf16 keeps 8 significant bits, f16 11).
double avg_rtol(DType t) { return t == DType::BF16 ? 8e-3 : t == DType::F16 ? 1e-3 : 1e-6; }

const char* op_name(ReduceOp op) {
  return op == ReduceOp::Sum ? "sum" : op == ReduceOp::Avg ? "avg" : "max";
}

std::vector<ReduceOp> ops_for(DType t) {
  if (is_floating(t)) return {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max};
  return {ReduceOp::Sum, ReduceOp::Max};
}

TEST(Communicator, WorldMatchesMpiCommWorld) {
  auto world = mpi_world();
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(world->rank(), rank);
  EXPECT_EQ(world->size(), size);
  EXPECT_EQ(world->name(), "world");
  EXPECT_EQ(error_rank(), rank);
}

TEST(Communicator, AllReduceEveryOpAndDtype) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  const Shape shape = {37};  // odd, so nothing lines up by accident
  for (bool blocking : {false, true}) {
    for (DType dt : kAllDTypes) {
      for (ReduceOp op : ops_for(dt)) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + op_name(op) +
                     (blocking ? " blocking" : " async"));
        auto of = [&](int r) { return small_ints(shape, seed_of(r, 1), lo_of(dt), 8, dt); };
        Tensor t = of(me);
        if (blocking)
          world->all_reduce_(t, op);
        else
          world->all_reduce(t, op)->wait();
        EXPECT_EQ(t.dtype(), dt);
        const double rtol = op == ReduceOp::Avg ? avg_rtol(dt) : 0.0;
        EXPECT_TRUE(testing::all_close(to_doubles(t), reduce_locally(n, op, of), rtol, 0.0));
      }
    }
  }
}

TEST(Communicator, AllReduceRealValues) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  auto of = [&](int r) { return testing::uniform({1000}, seed_of(r, 2), -3, 3); };
  Tensor t = of(me);
  world->all_reduce_(t);  // the blocking convenience, Sum
  // f32 sums of n terms in MPI's order vs the local order: a few ulps.
  EXPECT_TRUE(testing::all_close(to_doubles(t), reduce_locally(n, ReduceOp::Sum, of), 1e-5, 1e-6));
  // Every rank holds the same bits.
  Tensor root = t.clone();
  world->broadcast(root, 0)->wait();
  EXPECT_EQ(t.to_vector<float>(), root.to_vector<float>());
}

TEST(Communicator, ReduceScatterEveryOpAndDtype) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  const Shape chunk = {5, 3};
  for (bool blocking : {false, true}) {
    for (DType dt : kAllDTypes) {
      for (ReduceOp op : ops_for(dt)) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + op_name(op) +
                     (blocking ? " blocking" : " async"));
        auto of = [&](int r) { return small_ints({n, 5, 3}, seed_of(r, 3), lo_of(dt), 8, dt); };
        Tensor out = full(chunk, 99.0, dt);
        if (blocking)
          world->reduce_scatter_(of(me), out, op);
        else
          world->reduce_scatter(of(me), out, op)->wait();
        Doubles all = reduce_locally(n, op, of);
        Doubles mine(all.begin() + me * 15, all.begin() + (me + 1) * 15);
        const double rtol = op == ReduceOp::Avg ? avg_rtol(dt) : 0.0;
        EXPECT_TRUE(testing::all_close(to_doubles(out), mine, rtol, 0.0));
      }
    }
  }
}

TEST(Communicator, AllGatherEveryDtype) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  for (bool blocking : {false, true}) {
    for (DType dt : kAllDTypes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (blocking ? " blocking" : " async"));
      auto of = [&](int r) { return small_ints({2, 7}, seed_of(r, 4), lo_of(dt), 8, dt); };
      Tensor out = zeros({n, 2, 7}, dt);
      if (blocking)
        world->all_gather_(of(me), out);
      else
        world->all_gather(of(me), out)->wait();
      Doubles expected;
      for (int r = 0; r < n; ++r) {
        Doubles v = to_doubles(of(r));
        expected.insert(expected.end(), v.begin(), v.end());
      }
      EXPECT_EQ(to_doubles(out), expected);
    }
  }
}

TEST(Communicator, AllGatherInPlaceFromOwnChunk) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  Tensor out = zeros({n, 6});
  Tensor mine = out.select(0, me);  // this rank's chunk of out: gathered in place
  mine.fill_(me + 0.5);
  world->all_gather(mine, out)->wait();
  for (int r = 0; r < n; ++r)
    for (double v : to_doubles(out.select(0, r))) EXPECT_EQ(v, r + 0.5);
  mine.fill_(me + 1.5);
  world->all_gather_(mine, out);
  for (int r = 0; r < n; ++r)
    for (double v : to_doubles(out.select(0, r))) EXPECT_EQ(v, r + 1.5);
}

TEST(Communicator, BroadcastFromEveryRoot) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  for (DType dt : kAllDTypes) {
    for (int root = 0; root < n; ++root) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " root " + std::to_string(root));
      Tensor t = small_ints({9}, seed_of(me, 5), lo_of(dt), 8, dt);
      world->broadcast(t, root)->wait();
      EXPECT_EQ(to_doubles(t), to_doubles(small_ints({9}, seed_of(root, 5), lo_of(dt), 8, dt)));
    }
  }
}

TEST(Communicator, SendRecvRing) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  const int next = (me + 1) % n, prev = (me + n - 1) % n;
  // Two messages each way with different tags; receives posted in the other
  // tag order than the sends, so matching is by tag, not by arrival.
  Tensor a = full({16}, me * 10.0), b = full({4}, me * 10.0 + 1, DType::I64);
  Tensor ra = zeros({16}), rb = zeros({4}, DType::I64);
  WorkPtr recv_b = world->recv(rb, prev, 7);
  WorkPtr recv_a = world->recv(ra, prev, 3);
  WorkPtr send_a = world->send(a, next, 3);
  WorkPtr send_b = world->send(b, next, 7);
  recv_a->wait();
  recv_b->wait();
  send_b->wait();
  send_a->wait();
  for (double v : to_doubles(ra)) EXPECT_EQ(v, prev * 10.0);
  for (double v : to_doubles(rb)) EXPECT_EQ(v, prev * 10.0 + 1);
}

TEST(Communicator, AllToAllUnevenCounts) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  // Rank i sends (i + 2j + 1) % 3 elements to rank j: some pairs send none.
  auto count = [](int i, int j) { return int64_t((i + 2 * j + 1) % 3); };
  // Element k of the block i -> j holds i*1000 + j*100 + k.
  std::vector<int64_t> send_counts, recv_counts;
  std::vector<int32_t> send_vals, expected;
  for (int j = 0; j < n; ++j) {
    send_counts.push_back(count(me, j));
    for (int64_t k = 0; k < count(me, j); ++k)
      send_vals.push_back(int32_t(me * 1000 + j * 100 + k));
  }
  for (int i = 0; i < n; ++i) {
    recv_counts.push_back(count(i, me));
    for (int64_t k = 0; k < count(i, me); ++k) expected.push_back(int32_t(i * 1000 + me * 100 + k));
  }
  Tensor in = from_vector<int32_t>(send_vals, {int64_t(send_vals.size())});
  Tensor out = full({int64_t(expected.size())}, -1.0, DType::I32);
  world->all_to_all(in, send_counts, out, recv_counts)->wait();
  EXPECT_EQ(out.to_vector<int32_t>(), expected);
  Tensor out2 = full({int64_t(expected.size())}, -1.0, DType::I32);
  world->all_to_all_(in, send_counts, out2, recv_counts);
  EXPECT_EQ(out2.to_vector<int32_t>(), expected);

  // bf16 moves bit for bit.
  Tensor hin = in.to(DType::BF16), hout = zeros({int64_t(expected.size())}, DType::BF16);
  world->all_to_all(hin, send_counts, hout, recv_counts)->wait();
  EXPECT_EQ(to_doubles(hout), to_doubles(out.to(DType::BF16)));
}

TEST(Communicator, AsyncOverlapWaitOutOfOrder) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  const std::vector<int64_t> sizes = {1, 100, 4096, 1 << 16};
  std::vector<Tensor> ts;
  std::vector<WorkPtr> works;
  for (size_t i = 0; i < sizes.size(); ++i) {
    ts.push_back(full({sizes[i]}, double(me + 1) * double(i + 1)));
    works.push_back(world->all_reduce(ts.back(), ReduceOp::Sum));
  }
  Tensor gathered = zeros({n, 3});
  WorkPtr gather = world->all_gather(full({3}, double(me)), gathered);
  Tensor bcast = full({5}, double(me));
  WorkPtr bc = world->broadcast(bcast, n - 1);
  // Poll one to completion, then wait on the rest last-posted first.
  while (!works[1]->done()) {
  }
  EXPECT_TRUE(works[1]->done());
  bc->wait();
  gather->wait();
  for (size_t i = works.size(); i-- > 0;) works[i]->wait();
  for (auto& w : works) {
    w->wait();  // idempotent
    EXPECT_TRUE(w->done());
  }
  const double ranks_sum = n * (n + 1) / 2.0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Doubles v = to_doubles(ts[i]);
    EXPECT_EQ(v.front(), ranks_sum * double(i + 1));
    EXPECT_EQ(v.back(), ranks_sum * double(i + 1));
  }
  for (int r = 0; r < n; ++r)
    for (double v : to_doubles(gathered.select(0, r))) EXPECT_EQ(v, r);
  for (double v : to_doubles(bcast)) EXPECT_EQ(v, n - 1);
}

TEST(Communicator, DestroyingUnfinishedWorkWaitsForIt) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  Tensor t = full({1 << 14}, double(me));
  Tensor h = full({33}, double(me), DType::BF16);
  {
    WorkPtr w = world->all_reduce(t, ReduceOp::Sum);
    WorkPtr wh = world->all_reduce(h, ReduceOp::Avg);  // finishes (f32 -> bf16) on destruction
  }
  for (double v : to_doubles(t)) ASSERT_EQ(v, n * (n - 1) / 2.0);
  for (double v : to_doubles(h)) ASSERT_NEAR(v, (n - 1) / 2.0, 1e-2);
}

TEST(Communicator, SplitOrdersByKeyAndReducesWithinGroups) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  // Even and odd ranks, each group ordered by descending world rank.
  auto sub = world->split(me % 2, -me, "parity");
  std::vector<int> members;
  for (int r = n - 1; r >= 0; --r)
    if (r % 2 == me % 2) members.push_back(r);
  EXPECT_EQ(sub->name(), "parity");
  ASSERT_EQ(sub->size(), int(members.size()));
  EXPECT_EQ(members[size_t(sub->rank())], me);

  Tensor ranks = zeros({sub->size()}, DType::I32);
  sub->all_gather(full({1}, me, DType::I32), ranks)->wait();
  std::vector<int32_t> got = ranks.to_vector<int32_t>();
  EXPECT_EQ(std::vector<int>(got.begin(), got.end()), members);

  Tensor t = full({4}, me);
  sub->all_reduce(t, ReduceOp::Sum)->wait();
  double expected = 0;
  for (int r : members) expected += r;
  for (double v : to_doubles(t)) EXPECT_EQ(v, expected);

  // A split of a split, and barriers on both.
  auto single = sub->split(sub->rank(), 0, "self");
  EXPECT_EQ(single->size(), 1);
  EXPECT_EQ(single->rank(), 0);
  single->barrier();
  sub->barrier();
  world->barrier();
}

TEST(Communicator, SizeOneCommunicatorIsIdentity) {
  auto world = mpi_world();
  auto self = world->split(world->rank(), 0, "self");
  Tensor t = testing::uniform({10}, 3);
  Doubles before = to_doubles(t);
  self->all_reduce(t, ReduceOp::Avg)->wait();
  EXPECT_EQ(to_doubles(t), before);
  Tensor out = zeros({10});
  self->all_gather(t, out)->wait();
  EXPECT_EQ(to_doubles(out), before);
}

TEST(Communicator, RefusesNonContiguousTensors) {
  auto world = mpi_world();
  Tensor t = zeros({4, 6}).transpose(0, 1);
  EXPECT_KEEL_ERROR(world->all_reduce(t, ReduceOp::Sum), "all_reduce on communicator 'world'",
                    "not contiguous", ".contiguous()");
  Tensor out = zeros({world->size() * 24});
  EXPECT_KEEL_ERROR(world->all_gather(t, out), "all_gather", "in (f32 (6, 4)", "not contiguous");
  Tensor strided = zeros({16}).as_strided({8}, {2}, 0);
  EXPECT_KEEL_ERROR(world->recv(strided, 0, 0), "recv", "not contiguous");
  EXPECT_KEEL_ERROR(world->send(strided, 0, 0), "send", "not contiguous");
}

TEST(Communicator, RefusesCountAndDtypeMismatches) {
  auto world = mpi_world();
  const int n = world->size();
  Tensor out = zeros({3});
  EXPECT_KEEL_ERROR(world->reduce_scatter(zeros({3 * n + 1}), out, ReduceOp::Sum), "reduce_scatter",
                    "element count mismatch", "needs size() x out.numel()");
  Tensor big = zeros({3 * n + 2});
  EXPECT_KEEL_ERROR(world->all_gather(zeros({3}), big), "all_gather", "element count mismatch");
  Tensor gathered_bf16 = zeros({3 * n}, DType::BF16);
  EXPECT_KEEL_ERROR(world->all_gather(zeros({3}), gathered_bf16), "dtype mismatch", "in is f32",
                    "out is bf16");
  EXPECT_KEEL_ERROR(world->reduce_scatter(zeros({3 * n}, DType::I32), out, ReduceOp::Sum),
                    "dtype mismatch", "in is i32", "out is f32");

  std::vector<int64_t> ones(size_t(n), 1), wrong_len(size_t(n) + 1, 1);
  Tensor a = zeros({n}), b = zeros({n});
  EXPECT_KEEL_ERROR(world->all_to_all(a, wrong_len, b, ones), "all_to_all", "send_counts has",
                    "entries, the communicator has");
  std::vector<int64_t> too_many = ones;
  too_many[0] = 2;
  EXPECT_KEEL_ERROR(world->all_to_all(a, ones, b, too_many), "recv_counts sum to",
                    "element count mismatch");
  std::vector<int64_t> negative = ones;
  negative[0] = -1;
  EXPECT_KEEL_ERROR(world->all_to_all(a, negative, b, ones), "send_counts[0] = -1", "negative");
  std::vector<int64_t> huge = ones;
  huge[0] = int64_t(INT_MAX) + 1;
  EXPECT_KEEL_ERROR(world->all_to_all(a, huge, b, ones), "send_counts[0] = 2147483648",
                    "int count limit");
  EXPECT_KEEL_ERROR(world->all_to_all(a, ones, a, ones), "overlap");
}

TEST(Communicator, RefusesBadArguments) {
  auto world = mpi_world();
  const int n = world->size();
  Tensor i = zeros({4}, DType::I32);
  EXPECT_KEEL_ERROR(world->all_reduce(i, ReduceOp::Avg), "Avg needs a floating dtype", "i32");
  Tensor t = zeros({4});
  EXPECT_KEEL_ERROR(world->broadcast(t, n), "broadcast", "root", "is not a rank");
  EXPECT_KEEL_ERROR(world->send(t, -1, 0), "send", "destination -1 is not a rank");
  EXPECT_KEEL_ERROR(world->recv(t, n + 3, 0), "recv", "source");
  EXPECT_KEEL_ERROR(world->send(t, 0, -5), "tag -5");
  EXPECT_KEEL_ERROR(world->split(-2, 0, "bad"), "split", "color -2");
  Tensor undefined;
  EXPECT_KEEL_ERROR(world->all_reduce(undefined, ReduceOp::Sum), "undefined tensor");
}

TEST(Communicator, DeviceTensorsNeedTheNcclBackend) {
  auto world = mpi_world();
#if !(defined(KEEL_WITH_NCCL) && defined(KEEL_WITH_CUDA))
  EXPECT_KEEL_ERROR(make_nccl_communicator(*world, 0), "make_nccl_communicator",
                    "built without NCCL");
#endif
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: device tensors cannot be made";
  Tensor d = zeros({4}, DType::F32, Device::cuda(0));
  EXPECT_KEEL_ERROR(world->all_reduce(d, ReduceOp::Sum), "MPI backend", "device tensor",
                    "make_nccl_communicator");
}

TEST(Communicator, MpiErrorsBecomeKeelErrorsAtWait) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  // Rank 0 sends 8 elements where rank 1 expects 4: MPI reports truncation
  // on the receiving side when the receive is waited on.
  if (me == 0) {
    world->send(zeros({8}), 1, 11)->wait();
  } else if (me == 1) {
    Tensor small = zeros({4});
    WorkPtr w = world->recv(small, 0, 11);
    EXPECT_KEEL_ERROR(w->wait(), "recv on communicator 'world'", "from rank 0", "failed", "rank 1");
  }
  (void)n;
  world->barrier();
}

// ---- NCCL backend (device tensors) -------------------------------------------
#if defined(KEEL_WITH_NCCL) && defined(KEEL_WITH_CUDA)

// NCCL wants one GPU per rank: device = local rank on the node.
int local_device_or_skip_reason(std::string& why) {
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local = 0, local_size = 1;
  MPI_Comm_rank(node, &local);
  MPI_Comm_size(node, &local_size);
  MPI_Comm_free(&node);
  // Every rank must agree to skip, or the others would wait in a collective.
  int enough = cuda_device_count() >= local_size ? 1 : 0, all_enough = 0;
  MPI_Allreduce(&enough, &all_enough, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all_enough) {
    why = "NCCL tests need one CUDA device per rank on the node (" +
          std::to_string(cuda_device_count()) + " visible, " + std::to_string(local_size) +
          " ranks)";
    return -1;
  }
  return local;
}

Tensor on(const Tensor& t, int device) { return t.to(Device::cuda(device)); }

TEST(NcclCommunicator, CollectivesMatchTheMpiResults) {
  std::string why;
  const int dev = local_device_or_skip_reason(why);
  if (dev < 0) GTEST_SKIP() << why;
  auto world = mpi_world();
  auto nccl = make_nccl_communicator(*world, dev);
  const int n = nccl->size(), me = nccl->rank();
  ASSERT_EQ(n, world->size());
  ASSERT_EQ(me, world->rank());

  for (DType dt : kAllDTypes) {
    for (ReduceOp op : ops_for(dt)) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + op_name(op));
      auto of = [&](int r) { return small_ints({37}, seed_of(r, 21), lo_of(dt), 8, dt); };
      Tensor t = on(of(me), dev);
      nccl->all_reduce(t, op)->wait();
      const double rtol = op == ReduceOp::Avg ? avg_rtol(dt) : 0.0;
      EXPECT_TRUE(testing::all_close(to_doubles(t), reduce_locally(n, op, of), rtol, 0.0));

      auto chunks = [&](int r) { return small_ints({n, 6}, seed_of(r, 22), lo_of(dt), 8, dt); };
      Tensor out = on(zeros({6}, dt), dev);
      nccl->reduce_scatter(on(chunks(me), dev), out, op)->wait();
      Doubles all = reduce_locally(n, op, chunks);
      EXPECT_TRUE(testing::all_close(
          to_doubles(out), Doubles(all.begin() + me * 6, all.begin() + (me + 1) * 6), rtol, 0.0));
    }
    Tensor gathered = on(zeros({n, 5}, dt), dev);
    nccl->all_gather(on(small_ints({5}, seed_of(me, 23), lo_of(dt), 8, dt), dev), gathered)->wait();
    Doubles expected;
    for (int r = 0; r < n; ++r) {
      Doubles v = to_doubles(small_ints({5}, seed_of(r, 23), lo_of(dt), 8, dt));
      expected.insert(expected.end(), v.begin(), v.end());
    }
    EXPECT_EQ(to_doubles(gathered), expected);

    Tensor b = on(small_ints({9}, seed_of(me, 24), lo_of(dt), 8, dt), dev);
    nccl->broadcast(b, n - 1)->wait();
    EXPECT_EQ(to_doubles(b), to_doubles(small_ints({9}, seed_of(n - 1, 24), lo_of(dt), 8, dt)));
  }
}

TEST(NcclCommunicator, RingAllToAllSplitAndOverlap) {
  std::string why;
  const int dev = local_device_or_skip_reason(why);
  if (dev < 0) GTEST_SKIP() << why;
  auto world = mpi_world();
  auto nccl = make_nccl_communicator(*world, dev);
  const int n = nccl->size(), me = nccl->rank();
  const int next = (me + 1) % n, prev = (me + n - 1) % n;

  // A ring posted send-first on every rank: batched into one group, no deadlock.
  Tensor a = on(full({1000}, me * 10.0), dev), ra = on(zeros({1000}), dev);
  WorkPtr s = nccl->send(a, next, 0);
  WorkPtr r = nccl->recv(ra, prev, 0);
  r->wait();
  s->wait();
  for (double v : to_doubles(ra)) ASSERT_EQ(v, prev * 10.0);

  // Uneven all-to-all.
  auto count = [](int i, int j) { return int64_t((i + 2 * j + 1) % 3); };
  std::vector<int64_t> sc, rc;
  std::vector<float> sv, ev;
  for (int j = 0; j < n; ++j) {
    sc.push_back(count(me, j));
    for (int64_t k = 0; k < count(me, j); ++k) sv.push_back(float(me * 1000 + j * 100 + k));
  }
  for (int i = 0; i < n; ++i) {
    rc.push_back(count(i, me));
    for (int64_t k = 0; k < count(i, me); ++k) ev.push_back(float(i * 1000 + me * 100 + k));
  }
  Tensor in = on(from_vector<float>(sv, {int64_t(sv.size())}), dev);
  Tensor out = on(zeros({int64_t(ev.size())}), dev);
  nccl->all_to_all(in, sc, out, rc)->wait();
  EXPECT_EQ(out.to_vector<float>(), ev);

  // Several in flight, polled and waited out of order.
  std::vector<Tensor> ts;
  std::vector<WorkPtr> ws;
  for (int i = 0; i < 4; ++i) {
    ts.push_back(on(full({int64_t(1) << (4 * i)}, double(me + i)), dev));
    ws.push_back(nccl->all_reduce(ts.back(), ReduceOp::Sum));
  }
  while (!ws[2]->done()) {
  }
  for (int i = 3; i >= 0; --i) ws[size_t(i)]->wait();
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(to_doubles(ts[size_t(i)]).back(), n * (n - 1) / 2.0 + double(n) * i);

  // Split by parity, reduce inside each group.
  auto sub = nccl->split(me % 2, me, "parity");
  Tensor t = on(full({8}, me), dev);
  sub->all_reduce(t, ReduceOp::Sum)->wait();
  double expected = 0;
  for (int q = me % 2; q < n; q += 2) expected += q;
  for (double v : to_doubles(t)) EXPECT_EQ(v, expected);
  sub->barrier();
  nccl->barrier();
}

TEST(NcclCommunicator, RefusesHostTensors) {
  std::string why;
  const int dev = local_device_or_skip_reason(why);
  if (dev < 0) GTEST_SKIP() << why;
  auto world = mpi_world();
  auto nccl = make_nccl_communicator(*world, dev);
  Tensor h = zeros({4});
  EXPECT_KEEL_ERROR(nccl->all_reduce(h, ReduceOp::Sum), "NCCL backend", "on the host",
                    "MPI backend");
  Tensor d = on(zeros({4, 6}), dev).transpose(0, 1);
  EXPECT_KEEL_ERROR(nccl->all_reduce(d, ReduceOp::Sum), "not contiguous");
}

#endif  // KEEL_WITH_NCCL && KEEL_WITH_CUDA

}  // namespace
}  // namespace keel::parallel
