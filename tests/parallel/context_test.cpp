// ParallelContext under mpirun (any world size): for every mesh shape of the
// world, the communicator over a set of axes holds exactly the ranks that
// share the other coordinates, is cached, and the data ranks are dp x ep.
// Also the world of one (no MPI needed): every collective is the identity
// or a copy, peers are refused, and a context built on it is a 1-rank mesh.
#include "parallel/context.h"

#include <gtest/gtest.h>

#include "parallel/data_parallel.h"
#include "tests/testing/gradcheck.h"

namespace keel::parallel {
namespace {

const Axis kAxes[] = {Axis::DP, Axis::CP, Axis::EP, Axis::TP};

TEST(ParallelContext, AxisGroupsHoldTheRanksThatShareTheOtherCoordinates) {
  auto world = mpi_world();
  const int n = world->size();
  for (int dp = 1; dp <= n; ++dp)
    for (int tp = 1; dp * tp <= n; ++tp) {
      if (n % (dp * tp) != 0) continue;
      const MeshShape shape{dp, n / (dp * tp), 1, tp};  // the rest on cp
      SCOPED_TRACE(shape.str());
      ParallelContext ctx(*world, shape);
      EXPECT_EQ(ctx.shape(), shape);
      EXPECT_EQ(ctx.size(), n);
      EXPECT_EQ(ctx.lead(), world->rank() == 0);
      for (const std::vector<Axis>& axes : std::vector<std::vector<Axis>>{
               {Axis::DP, Axis::CP}, {Axis::DP, Axis::CP, Axis::EP}, {Axis::TP}, {}}) {
        Communicator& c = ctx.host(axes);
        int want = 1;
        for (Axis a : axes)
          want *= a == Axis::DP   ? shape.dp
                  : a == Axis::CP ? shape.cp
                  : a == Axis::EP ? shape.ep
                                  : shape.tp;
        EXPECT_EQ(c.size(), want);
        EXPECT_EQ(&ctx.host(axes), &c);  // cached
        // The group's members agree on every coordinate outside `axes`.
        const MeshCoord me = ctx.coord();
        for (Axis a : kAxes) {
          if (std::find(axes.begin(), axes.end(), a) != axes.end()) continue;
          Tensor v = full({1}, double(me[a]), DType::F32);
          Tensor mx = v.clone(), mn = neg(v);
          c.all_reduce_(mx, ReduceOp::Max);
          c.all_reduce_(mn, ReduceOp::Max);
          EXPECT_EQ(mx.item(), double(me[a]));
          EXPECT_EQ(-mn.item(), double(me[a]));
        }
      }
      EXPECT_EQ(ctx.world().size(), n);
      EXPECT_EQ(&ctx.host({Axis::TP}), &ctx.mesh().tp());  // single axes are the mesh's own
      // On the CPU the device group is the host group.
      EXPECT_EQ(&ctx.device_group({Axis::DP, Axis::CP}), &ctx.host({Axis::DP, Axis::CP}));
      EXPECT_EQ(ctx.data_world(), dp);
      EXPECT_EQ(ctx.data_rank(), ctx.coord().dp);
    }
}

TEST(ParallelContext, RngStreamsAreSeededAlikeOnEveryRankWithDistinctKeys) {
  auto world = mpi_world();
  ParallelContext ctx(*world, MeshShape{world->size()});
  // Distinct keys before any seed() too.
  EXPECT_NE(ctx.rng(RngRegion::Replicated).seed(), ctx.rng(RngRegion::ModelParallel).seed());
  ctx.seed(42);
  Generator& a = ctx.rng(RngRegion::Replicated);
  Generator& b = ctx.rng(RngRegion::ModelParallel);
  EXPECT_EQ(a.seed(), 42u);
  EXPECT_NE(a.seed(), b.seed());  // the regions never draw the same masks
  EXPECT_EQ(a.offset(), 0u);
  // The same on every rank.
  EXPECT_EQ(sum_across(*world, double(b.seed())), double(b.seed()) * world->size());
}

TEST(ParallelContext, AMeshThatDoesNotFitTheWorldIsRefused) {
  auto world = mpi_world();
  const std::string needs = std::to_string(world->size() + 1) + " ranks";
  EXPECT_KEEL_ERROR(ParallelContext(*world, MeshShape{world->size() + 1}), "needs", needs.c_str());
}

TEST(LocalWorld, CollectivesOverOneRankAreCopies) {
  auto one = local_world();
  EXPECT_EQ(one->size(), 1);
  EXPECT_EQ(one->rank(), 0);
  Tensor t = from_vector<float>({1, 2, 3}, {3});
  one->all_reduce_(t, ReduceOp::Avg);
  EXPECT_EQ(testing::to_doubles(t), (std::vector<double>{1, 2, 3}));
  Tensor out = zeros({3});
  one->all_gather_(t, out);
  EXPECT_EQ(testing::to_doubles(out), (std::vector<double>{1, 2, 3}));
  Tensor rs = zeros({3});
  one->reduce_scatter_(t, rs, ReduceOp::Sum);
  EXPECT_EQ(testing::to_doubles(rs), (std::vector<double>{1, 2, 3}));
  Tensor a2a = zeros({3});
  one->all_to_all_(t, {3}, a2a, {3});
  EXPECT_EQ(testing::to_doubles(a2a), (std::vector<double>{1, 2, 3}));
  one->broadcast(t, 0)->wait();
  one->barrier();
  EXPECT_EQ(one->split(0, 0, "tp")->size(), 1);
  EXPECT_EQ(one->split(0, 0, "tp")->name(), "tp");
  EXPECT_EQ(sum_across(*one, 2.5), 2.5);
  std::string s = "x";
  broadcast_string(*one, s, 0);
  EXPECT_EQ(s, "x");
  // What one rank cannot do, it says.
  EXPECT_KEEL_ERROR(one->send(t, 0), "send", "no peer");
  EXPECT_KEEL_ERROR(one->recv(t, 0), "recv", "no peer");
  Tensor four = zeros({4});
  EXPECT_KEEL_ERROR(one->all_gather_(t, four), "all_gather");
  EXPECT_KEEL_ERROR(one->broadcast(t, 1), "broadcast", "root");
  Tensor ints = zeros({2}, DType::I64);
  EXPECT_KEEL_ERROR(one->all_reduce_(ints, ReduceOp::Avg), "all_reduce");
}

TEST(LocalWorld, AContextOfOneProcessIsAOneRankMesh) {
  ParallelContext ctx;
  EXPECT_EQ(ctx.size(), 1);
  EXPECT_TRUE(ctx.lead());
  EXPECT_EQ(ctx.shape(), MeshShape{});
  EXPECT_EQ(ctx.world().size(), 1);
  EXPECT_EQ(ctx.host({Axis::DP, Axis::CP, Axis::EP}).size(), 1);
  EXPECT_EQ(ctx.data_world(), 1);
  EXPECT_EQ(ctx.device(), Device::cpu());
}

}  // namespace
}  // namespace keel::parallel
