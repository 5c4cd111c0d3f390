#include "parallel/context.h"

namespace keel::parallel {

namespace {
constexpr Axis kAxes[] = {Axis::DP, Axis::CP, Axis::EP, Axis::TP};
}

ParallelContext::ParallelContext(Communicator& world, const MeshShape& shape, Device device)
    : mesh_(std::make_unique<Mesh>(world, shape)), device_(device) {
  seed(0);  // distinct keys from the start, not only once a trainer seeds
}

ParallelContext::ParallelContext(Device device)
    : own_world_(local_world(Device::cpu())),
      mesh_(std::make_unique<Mesh>(*own_world_, MeshShape{})),
      device_(device) {
  seed(0);
}

ParallelContext::~ParallelContext() = default;

unsigned ParallelContext::mask_of(const std::vector<Axis>& axes) {
  unsigned m = 0;
  for (Axis a : axes) m |= 1u << unsigned(a);
  return m;
}

Communicator& ParallelContext::host(const std::vector<Axis>& axes) {
  const unsigned m = mask_of(axes);
  for (Axis a : kAxes)
    if (m == 1u << unsigned(a)) return mesh_->axis(a);  // the mesh's own
  auto it = host_.find(m);
  if (it == host_.end()) {
    std::vector<Axis> ordered;  // slowest first, so names read "dp+cp"
    for (Axis a : kAxes)
      if (m & (1u << unsigned(a))) ordered.push_back(a);
    it = host_.emplace(m, mesh_->group(ordered, m == mask_of({kAxes, kAxes + 4}) ? "world" : ""))
             .first;
  }
  return *it->second;
}

Communicator& ParallelContext::device_group(const std::vector<Axis>& axes) {
  Communicator& h = host(axes);
  if (!device_.is_cuda()) return h;
  const unsigned m = mask_of(axes);
  auto it = device_groups_.find(m);
  if (it == device_groups_.end()) {
    // One rank needs no NCCL: a world of one on the device.
    std::unique_ptr<Communicator> c =
        h.size() == 1 ? local_world(device_, h.name()) : make_nccl_communicator(h, device_.index);
    it = device_groups_.emplace(m, std::move(c)).first;
  }
  return *it->second;
}

int ParallelContext::data_rank() const { return coord().dp * shape().ep + coord().ep; }
int ParallelContext::data_world() const { return shape().dp * shape().ep; }

Generator& ParallelContext::rng(RngRegion region) {
  return region == RngRegion::Replicated ? replicated_rng_ : model_parallel_rng_;
}

void ParallelContext::seed(uint64_t seed) {
  replicated_rng_.set_state(seed, 0);
  // Another key, or the two regions would draw the same masks at the same
  // offsets. Megatron offsets its model-parallel seed by 2718 (plus the tp
  // rank, which logical-coordinate masks do not need).
  model_parallel_rng_.set_state(seed + 2718, 0);
}

}  // namespace keel::parallel
