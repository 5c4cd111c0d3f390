// Mesh tests under mpirun: for every (dp, cp, ep, tp) whose product is the
// world size, this rank's coordinates follow Megatron's order (tp fastest,
// then cp, ep, dp) and each axis communicator holds exactly the ranks that
// share the other coordinates, in axis order. Layout mismatches are refused
// with both numbers named.
#include "parallel/mesh.h"

#include <gtest/gtest.h>

#include "tests/testing/gradcheck.h"

namespace keel::parallel {
namespace {

const Axis kAxes[] = {Axis::DP, Axis::CP, Axis::EP, Axis::TP};

std::vector<MeshShape> shapes_of(int n) {
  std::vector<MeshShape> out;
  for (int dp = 1; dp <= n; ++dp)
    for (int cp = 1; cp <= n; ++cp)
      for (int ep = 1; ep <= n; ++ep)
        for (int tp = 1; tp <= n; ++tp)
          if (dp * cp * ep * tp == n) out.push_back({dp, cp, ep, tp});
  return out;
}

int axis_size(const MeshShape& s, Axis a) {
  switch (a) {
    case Axis::DP:
      return s.dp;
    case Axis::CP:
      return s.cp;
    case Axis::EP:
      return s.ep;
    case Axis::TP:
      return s.tp;
  }
  return 0;
}

MeshCoord with(MeshCoord c, Axis a, int v) {
  switch (a) {
    case Axis::DP:
      c.dp = v;
      break;
    case Axis::CP:
      c.cp = v;
      break;
    case Axis::EP:
      c.ep = v;
      break;
    case Axis::TP:
      c.tp = v;
      break;
  }
  return c;
}

// The world ranks in `comm`, in its rank order.
std::vector<int> members(Communicator& comm, int world_rank) {
  Tensor all = zeros({comm.size()}, DType::I32);
  comm.all_gather(full({1}, world_rank, DType::I32), all)->wait();
  std::vector<int32_t> v = all.to_vector<int32_t>();
  return {v.begin(), v.end()};
}

TEST(Mesh, RankOrderIsTpFastestThenCpEpDp) {
  // Independent of mesh_coord: enumerate ranks with tp innermost.
  const MeshShape s{2, 3, 2, 2};
  int r = 0;
  for (int dp = 0; dp < s.dp; ++dp)
    for (int ep = 0; ep < s.ep; ++ep)
      for (int cp = 0; cp < s.cp; ++cp)
        for (int tp = 0; tp < s.tp; ++tp, ++r) {
          const MeshCoord c{dp, cp, ep, tp};
          EXPECT_EQ(mesh_coord(s, r), c) << "rank " << r;
          EXPECT_EQ(mesh_rank(s, c), r);
        }
  EXPECT_EQ(r, 24);
  EXPECT_EQ(s.str(), "dp=2 x cp=3 x ep=2 x tp=2");
  EXPECT_KEEL_ERROR(mesh_coord(s, 24), "rank 24 is outside the layout");
}

TEST(Mesh, CoordinatesAndAxisMembershipForEveryShape) {
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  for (const MeshShape& s : shapes_of(n)) {
    SCOPED_TRACE(s.str());
    Mesh mesh(*world, s);
    EXPECT_EQ(mesh.shape(), s);
    EXPECT_EQ(mesh.rank(), me);
    EXPECT_EQ(mesh.size(), n);
    const MeshCoord c = mesh.coord();
    EXPECT_EQ(c.tp, me % s.tp);
    EXPECT_EQ(c.cp, (me / s.tp) % s.cp);
    EXPECT_EQ(c.ep, (me / (s.tp * s.cp)) % s.ep);
    EXPECT_EQ(c.dp, me / (s.tp * s.cp * s.ep));
    EXPECT_EQ(members(mesh.world(), me), members(*world, me));
    for (Axis a : kAxes) {
      SCOPED_TRACE(axis_name(a));
      Communicator& comm = mesh.axis(a);
      EXPECT_EQ(comm.name(), axis_name(a));
      ASSERT_EQ(comm.size(), axis_size(s, a));
      EXPECT_EQ(comm.rank(), c[a]);
      std::vector<int> expected;
      for (int k = 0; k < axis_size(s, a); ++k) expected.push_back(mesh_rank(s, with(c, a, k)));
      EXPECT_EQ(members(comm, me), expected);
      // The group reduces over exactly those ranks.
      Tensor t = full({3}, me);
      comm.all_reduce(t, ReduceOp::Sum)->wait();
      double sum = 0;
      for (int r : expected) sum += r;
      for (double v : testing::to_doubles(t)) EXPECT_EQ(v, sum);
    }
    EXPECT_EQ(&mesh.tp(), &mesh.axis(Axis::TP));
    EXPECT_EQ(&mesh.dp(), &mesh.axis(Axis::DP));
    EXPECT_EQ(&mesh.cp(), &mesh.axis(Axis::CP));
    EXPECT_EQ(&mesh.ep(), &mesh.axis(Axis::EP));

    // A group over dp and cp: the ranks sharing ep and tp, by world rank.
    auto dpcp = mesh.group({Axis::DP, Axis::CP});
    EXPECT_EQ(dpcp->name(), "dp+cp");
    std::vector<int> expected;
    for (int r = 0; r < n; ++r) {
      const MeshCoord o = mesh_coord(s, r);
      if (o.ep == c.ep && o.tp == c.tp) expected.push_back(r);
    }
    EXPECT_EQ(members(*dpcp, me), expected);
  }
}

TEST(Mesh, FourRanksDpTwoTpTwoMatchesMegatron) {
  auto world = mpi_world();
  if (world->size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const int me = world->rank();
  Mesh mesh(*world, {.dp = 2, .tp = 2});
  // tp groups {0,1} {2,3}; dp groups {0,2} {1,3}.
  const std::vector<std::vector<int>> tp = {{0, 1}, {2, 3}}, dp = {{0, 2}, {1, 3}};
  EXPECT_EQ(members(mesh.tp(), me), tp[size_t(me / 2)]);
  EXPECT_EQ(members(mesh.dp(), me), dp[size_t(me % 2)]);
  EXPECT_EQ(mesh.cp().size(), 1);
  EXPECT_EQ(mesh.ep().size(), 1);
}

TEST(Mesh, RefusesALayoutThatDoesNotMatchTheWorld) {
  auto world = mpi_world();
  const int n = world->size();
  const MeshShape wrong = n == 4 ? MeshShape{2, 1, 1, 3} : MeshShape{2, 1, 1, 2};
  const std::string msg = "parallel layout " + wrong.str() + " needs " +
                          std::to_string(wrong.size()) + " ranks, the MPI world has " +
                          std::to_string(n);
  EXPECT_KEEL_ERROR(Mesh bad(*world, wrong), msg.c_str());
  const std::string bigger = "parallel layout dp=" + std::to_string(n + 1) +
                             " x cp=1 x ep=1 x tp=1 needs " + std::to_string(n + 1) +
                             " ranks, the MPI world has " + std::to_string(n);
  EXPECT_KEEL_ERROR(Mesh bad(*world, {.dp = n + 1}), bigger.c_str());
  EXPECT_KEEL_ERROR(Mesh bad(*world, {.dp = n, .cp = 0}), "cp=0", "at least 1 rank");
}

TEST(Mesh, MeshesOverASubCommunicator) {
  // A Mesh may be built over any communicator, e.g. one half of the world.
  auto world = mpi_world();
  const int n = world->size(), me = world->rank();
  if (n % 2 != 0) GTEST_SKIP() << "needs an even world";
  auto half = world->split(me / (n / 2), me, "half");
  Mesh mesh(*half, {.tp = half->size()});
  EXPECT_EQ(mesh.tp().size(), n / 2);
  EXPECT_EQ(mesh.coord().tp, me % (n / 2));
  EXPECT_EQ(mesh.world().name(), "half");
}

}  // namespace
}  // namespace keel::parallel
