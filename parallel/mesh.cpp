// The process grid: layout arithmetic and the per-axis sub-communicators.
#include "parallel/mesh.h"

namespace keel::parallel {

using keel::detail::cat;

std::string MeshShape::str() const {
  return cat("dp=", dp, " x cp=", cp, " x ep=", ep, " x tp=", tp);
}

const char* axis_name(Axis a) {
  switch (a) {
    case Axis::DP:
      return "dp";
    case Axis::CP:
      return "cp";
    case Axis::EP:
      return "ep";
    case Axis::TP:
      return "tp";
  }
  KEEL_ASSERT(false, "unknown axis");
  return "?";
}

int MeshCoord::operator[](Axis a) const {
  switch (a) {
    case Axis::DP:
      return dp;
    case Axis::CP:
      return cp;
    case Axis::EP:
      return ep;
    case Axis::TP:
      return tp;
  }
  KEEL_ASSERT(false, "unknown axis");
  return 0;
}

MeshCoord mesh_coord(const MeshShape& s, int rank) {
  KEEL_CHECK(rank >= 0 && rank < s.size(), "mesh_coord: rank ", rank, " is outside the layout ",
             s.str(), " (", s.size(), " ranks)");
  MeshCoord c;
  c.tp = rank % s.tp;
  c.cp = (rank / s.tp) % s.cp;
  c.ep = (rank / (s.tp * s.cp)) % s.ep;
  c.dp = rank / (s.tp * s.cp * s.ep);
  return c;
}

int mesh_rank(const MeshShape& s, const MeshCoord& c) {
  KEEL_CHECK(c.dp >= 0 && c.dp < s.dp && c.cp >= 0 && c.cp < s.cp && c.ep >= 0 && c.ep < s.ep &&
                 c.tp >= 0 && c.tp < s.tp,
             "mesh_rank: coordinates dp=", c.dp, " cp=", c.cp, " ep=", c.ep, " tp=", c.tp,
             " are outside the layout ", s.str());
  return ((c.dp * s.ep + c.ep) * s.cp + c.cp) * s.tp + c.tp;
}

namespace {
// The coordinates with the given axes set to 0: equal for exactly the ranks
// that form one group over those axes.
MeshCoord drop_axes(MeshCoord c, const std::vector<Axis>& axes) {
  for (Axis a : axes) {
    switch (a) {
      case Axis::DP:
        c.dp = 0;
        break;
      case Axis::CP:
        c.cp = 0;
        break;
      case Axis::EP:
        c.ep = 0;
        break;
      case Axis::TP:
        c.tp = 0;
        break;
    }
  }
  return c;
}
}  // namespace

Mesh::Mesh(Communicator& world, const MeshShape& shape) : shape_(shape) {
  KEEL_CHECK(shape.dp >= 1 && shape.cp >= 1 && shape.ep >= 1 && shape.tp >= 1, "parallel layout ",
             shape.str(), ": every axis needs at least 1 rank");
  KEEL_CHECK(shape.size() == world.size(), "parallel layout ", shape.str(), " needs ", shape.size(),
             " ranks, the MPI world has ", world.size());
  coord_ = mesh_coord(shape, world.rank());
  world_ = world.split(0, world.rank(), world.name());
  for (Axis a : {Axis::DP, Axis::CP, Axis::EP, Axis::TP}) {
    const int color = mesh_rank(shape_, drop_axes(coord_, {a}));
    axes_[size_t(a)] = world_->split(color, coord_[a], axis_name(a));
  }
}

std::unique_ptr<Communicator> Mesh::group(const std::vector<Axis>& axes, std::string name) {
  if (name.empty()) {
    for (Axis a : axes) {
      if (!name.empty()) name.push_back('+');
      name.append(axis_name(a));
    }
    if (name.empty()) name = "self";
  }
  const int color = mesh_rank(shape_, drop_axes(coord_, axes));
  return world_->split(color, world_->rank(), name);
}

}  // namespace keel::parallel
