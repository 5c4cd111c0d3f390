// Mesh: the dp x cp x ep x tp process grid over a world communicator, with
// one sub-communicator per axis. Rank order is tp fastest, then cp, then ep,
// then dp (as Megatron-LM), so a rank's coordinates are
//   tp = r % tp, cp = (r / tp) % cp, ep = (r / (tp*cp)) % ep, dp = r / (tp*cp*ep)
// and the tp group (ranks that differ only in tp) is a run of adjacent ranks.
// The Mesh owns its communicators; pass it (or one of its communicators) by
// reference to whatever needs them. Building one is collective over the world.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace keel::parallel {

struct MeshShape {
  int dp = 1, cp = 1, ep = 1, tp = 1;
  int64_t size() const { return int64_t(dp) * cp * ep * tp; }
  std::string str() const;  // "dp=2 x cp=1 x ep=1 x tp=2"
  bool operator==(const MeshShape&) const = default;
};

// The grid axes, slowest first.
enum class Axis { DP, CP, EP, TP };
const char* axis_name(Axis a);  // "dp", "cp", "ep", "tp"

struct MeshCoord {
  int dp = 0, cp = 0, ep = 0, tp = 0;
  int operator[](Axis a) const;
  bool operator==(const MeshCoord&) const = default;
};

// Pure layout arithmetic (no communication).
MeshCoord mesh_coord(const MeshShape& shape, int rank);
int mesh_rank(const MeshShape& shape, const MeshCoord& coord);

class Mesh {
 public:
  // Collective over `world`. Refuses a shape whose product is not
  // world.size() (keel::Error naming both) or with an axis below 1.
  Mesh(Communicator& world, const MeshShape& shape);
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  const MeshShape& shape() const { return shape_; }
  const MeshCoord& coord() const { return coord_; }
  int rank() const { return world_->rank(); }
  int size() const { return world_->size(); }

  // The Mesh's own duplicate of the world, and one communicator per axis:
  // the ranks that share every other coordinate, ordered by this axis's
  // coordinate (so axis(a).rank() == coord()[a]).
  Communicator& world() { return *world_; }
  Communicator& dp() { return *axes_[size_t(Axis::DP)]; }
  Communicator& cp() { return *axes_[size_t(Axis::CP)]; }
  Communicator& ep() { return *axes_[size_t(Axis::EP)]; }
  Communicator& tp() { return *axes_[size_t(Axis::TP)]; }
  Communicator& axis(Axis a) { return *axes_[size_t(a)]; }

  // A new communicator over several axes at once (e.g. {DP, CP} for
  // gradients replicated over data and context ranks): the ranks that share
  // the coordinates of every other axis, ordered by world rank. Collective
  // over the world. The caller owns it; `name` defaults to "dp+cp" etc.
  std::unique_ptr<Communicator> group(const std::vector<Axis>& axes, std::string name = "");

 private:
  MeshShape shape_;
  MeshCoord coord_;
  std::unique_ptr<Communicator> world_;
  std::array<std::unique_ptr<Communicator>, 4> axes_;
};

}  // namespace keel::parallel
