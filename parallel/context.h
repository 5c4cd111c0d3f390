// ParallelContext: everything a model and the trainer need to know about
// where they run, built once (by the CLI or a test) before the recipe and
// passed by reference to it and to the trainer. Nothing here is global.
//
//   - the Mesh (dp x cp x ep x tp) over the world;
//   - the resolved device;
//   - communicators over any set of mesh axes, on the host (MPI, or a world
//     of one without MPI) and on the device (NCCL built lazily from the host
//     group on first use on a GPU; the host group itself on the CPU);
//   - the RNG streams, as Megatron's RNG tracker keeps them but explicit:
//     one for replicated regions and one for model-parallel regions. Masks
//     are addressed by logical coordinates (autograd dropout), so each is
//     seeded alike on every rank and any layout draws the serial masks. The
//     two have different keys, and are separate so that a region one layout
//     shards does not shift the other region's stream.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "core/philox.h"
#include "parallel/mesh.h"

namespace keel::parallel {

enum class RngRegion { Replicated, ModelParallel };

class ParallelContext {
 public:
  // Collective over `world` (which must outlive the context): the mesh of
  // `shape`, refused when its size is not world.size().
  ParallelContext(Communicator& world, const MeshShape& shape, Device device = Device::cpu());
  // A single process: a world of one without MPI.
  explicit ParallelContext(Device device = Device::cpu());
  ~ParallelContext();
  ParallelContext(const ParallelContext&) = delete;
  ParallelContext& operator=(const ParallelContext&) = delete;

  Mesh& mesh() { return *mesh_; }
  const MeshShape& shape() const { return mesh_->shape(); }
  const MeshCoord& coord() const { return mesh_->coord(); }
  int rank() const { return mesh_->rank(); }
  int size() const { return mesh_->size(); }
  bool lead() const { return rank() == 0; }  // prints, writes metrics, renames checkpoints
  Device device() const { return device_; }

  // The host communicator over the ranks that differ only in `axes`
  // (all four: the world; none: this rank alone). Collective over the world
  // the first time a set is asked for; cached after.
  Communicator& host(const std::vector<Axis>& axes);
  Communicator& world() { return host({Axis::DP, Axis::CP, Axis::EP, Axis::TP}); }
  // The same group for tensors on device(): NCCL on a GPU (built on first
  // use, collective over the group), the host communicator on the CPU.
  Communicator& device_group(const std::vector<Axis>& axes);

  // The ranks that read different rows of the global batch: dp x ep
  // (experts see other tokens too). data_rank() in [0, data_world()).
  int data_rank() const;
  int data_world() const;

  Generator& rng(RngRegion region);
  // Seeds both streams (offset 0; the model-parallel one with seed + 2718).
  void seed(uint64_t seed);

 private:
  static unsigned mask_of(const std::vector<Axis>& axes);

  std::unique_ptr<Communicator> own_world_;  // the world of one, when there is no MPI
  std::unique_ptr<Mesh> mesh_;
  Device device_;
  std::map<unsigned, std::unique_ptr<Communicator>> host_, device_groups_;
  Generator replicated_rng_, model_parallel_rng_;
};

}  // namespace keel::parallel
