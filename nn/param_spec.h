// ParamSpec: how one parameter lies over the process mesh (parallel/mesh.h)
// -- its full logical shape, the dimension split over a mesh axis (with the
// equal segments of a fused weight such as qkv), this rank's coordinate on
// that axis, weight decay and the group its gradient is averaged over --
// and the box arithmetic that follows from it (core/box.h): this rank's
// local shape, the boxes of the logical tensor it holds, and the boxes of a
// flat piece of its shard (a ZeRO-1 piece of a sharded parameter). Module
// keeps one per parameter (nn/module.h); init_normal draws a shard's boxes so
// every layout starts from the serial weights, and checkpoints read and write
// shards by their boxes (trainer/checkpoint.h, shard_part).
//
// Order invariant. A rank's local tensor lists the elements of the union of
// its boxes in the logical tensor's row-major order, which is the order in
// which HDF5 transfers a union of hyperslabs. A split of dimension d into
// `shard_count` chunks, or into `stride` segments each split into
// `shard_count` chunks, satisfies it when the local tensor is the
// concatenation along d of this rank's chunk of each segment, in segment
// order: the map from local to logical coordinates is increasing in every
// dimension, so it keeps row-major order. local_range_boxes keeps it for any
// flat piece of the local tensor, for the same reason.
//
// Strided example: a qkv weight with logical (3C, C), shard_dim 0, stride 3,
// shard_count 2. Rank r holds rows [r*C/2, (r+1)*C/2) of each of the three
// segments (q, k, v), concatenated in segment order: local (3C/2, C), boxes
// [s*C + r*C/2 : s*C + (r+1)*C/2, 0:C] for s = 0, 1, 2.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/box.h"
#include "core/tensor.h"
#include "parallel/mesh.h"

namespace keel::nn {

// The ranks a parameter's gradient is averaged over: every rank that holds
// the same shard of it and sees other tokens.
enum class GradGroup {
  // Ordinary parameters: averaged over dp x cp x ep (replicated across data,
  // context and expert ranks; expert ranks route different tokens through
  // the shared, non-expert weights).
  DataParallel,
  // Expert weights, sharded over ep (each ep rank holds other experts):
  // averaged over dp x cp only.
  ExpertDataParallel,
};

struct ParamSpec {
  bool decay = false;  // weight decay
  // The full logical shape. Empty: the local tensor's own (not sharded);
  // Module fills it in at registration. The functions below read it as
  // given, so they see an empty one as a scalar's.
  Shape logical;
  int64_t shard_dim = -1;                    // -1: replicated
  parallel::Axis axis = parallel::Axis::TP;  // the mesh axis it is sharded over
  // Fused parameters (qkv): the sharded dimension holds `stride` equal
  // segments, each split over the axis.
  int64_t stride = 1;
  int shard_rank = 0, shard_count = 1;  // this rank's coordinate on `axis`, and the axis size
  GradGroup grad_group = GradGroup::DataParallel;

  bool sharded() const { return shard_dim >= 0; }
};

// A replicated spec of `shape`.
ParamSpec replicated_spec(const Shape& shape, bool decay = false);

// What is inconsistent in `spec` (shard_dim out of range, a stride or shard
// count that does not divide the sharded dimension, a shard_rank outside
// [0, shard_count), ...), or "" when nothing is.
std::string param_spec_problem(const ParamSpec& spec);
// "logical (6, 4) split on dim 0 over tp (stride 3, shard 1 of 2)", or
// "logical (6, 4) replicated".
std::string describe(const ParamSpec& spec);

// This rank's local shape: the logical shape with the sharded dimension
// divided by shard_count. A spec with a problem is a keel::Error naming it.
Shape local_shape(const ParamSpec& spec);
// The boxes of the logical tensor this rank holds, in order (one per
// segment; one box for a replicated parameter, none for an empty shard).
std::vector<Box> shard_boxes(const ParamSpec& spec);
// The boxes of the logical tensor holding local flat elements [begin, end)
// of this rank's shard (a ZeRO-1 piece of a sharded parameter); their union
// in row-major order is those local elements in flat order. A range outside
// [0, local numel) is a keel::Error.
std::vector<Box> local_range_boxes(const ParamSpec& spec, int64_t begin, int64_t end);

}  // namespace keel::nn
