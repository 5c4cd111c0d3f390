// Checkpoints: one HDF5 file per save holding every parameter and optimizer
// moment as its full logical tensor, plus step, metadata and a completion
// marker, written atomically (temporary name, fsync, rename). Also the
// helpers `--resume auto` and checkpoint rotation need.
//
// File layout (readable with h5py; see DESIGN.md "Checkpoints are layout-free"):
//   /                        attrs keel_checkpoint_version = 1, step, complete = 1 (last)
//   /model/<dotted.name>     one dataset per model tensor, full logical shape
//   /optim/<dotted.name>/m   optimizer moments (the caller names them "<param>/m", "<param>/v")
//   /meta/<name>             scalar datasets: fixed-length UTF-8 strings, int64 or float64
// Every tensor dataset carries a "keel_dtype" attribute ("f32", "bf16", ...).
// bf16 and f16 tensors are stored widened to f32 (exact), so h5py and numpy
// read them without a custom type; keel_dtype says what to narrow back to.
//
// Two ways in: a single process saves and loads whole tensors
// (CheckpointData, a thin convenience over whole parts), or a group of ranks
// does it collectively over parallel HDF5 (CheckpointParts): the file is
// opened with the MPI-IO driver on the group's communicator, every dataset
// is created with its full logical shape, and each rank writes or reads only
// its own part of each tensor, a set of boxes of the logical tensor
// (core/box.h, HDF5 hyperslabs): a tensor-parallel shard, a ZeRO piece of a
// flat range, or both. A group of one (no MPI needed) takes the same path
// with the serial driver. All produce the same file, so a checkpoint saved
// by 4 ranks (ZeRO, tp or not) loads on 2 ranks or in one process.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/box.h"
#include "core/tensor.h"
#include "nn/module.h"
#include "nn/param_spec.h"

namespace keel::parallel {
class Communicator;
}

namespace keel::trainer {

inline constexpr int64_t kCheckpointVersion = 1;

struct CheckpointData {
  int64_t step = 0;
  nn::NamedTensors model;  // "/model/<name>", full logical tensors
  nn::NamedTensors optim;  // "/optim/<name>", names like "blocks.0.attn.qkv.weight/m"
  std::vector<std::pair<std::string, std::string>> meta_text;  // config text, tokenizer id
  std::vector<std::pair<std::string, int64_t>> meta_int;       // rng seed/offset, data position
  std::vector<std::pair<std::string, double>> meta_float;
};

// Writes `data` to `path` atomically: the file at `path` (an earlier
// checkpoint, say) is replaced only once the new one is complete on disk. On
// any failure the temporary file is removed and a keel::Error is raised.
void save_checkpoint(const std::string& path, const CheckpointData& data);

// Fills `into` from the file at `path`: every tensor in into.model and
// into.optim (allocated by the caller with the expected shape and dtype, on
// any device, possibly a strided view) is overwritten in place; every name
// in the meta lists gets its stored value; into.step is set. Names in the
// file that `into` does not ask for are ignored, so a caller may load the
// model without the optimizer. A missing name, or a shape or dtype that
// differs from the file's, is a keel::Error naming the tensor and the file.
void load_checkpoint(const std::string& path, CheckpointData& into);

// ---- collective checkpoints (parallel HDF5) -------------------------------------------

// One rank's part of a tensor in a collective save or load: the elements of
// the logical tensor of `shape` that lie in `boxes` (in bounds, disjoint),
// held in `local` in the logical tensor's row-major order (the order of the
// boxes' union, see nn/param_spec.h: a shard's local tensor is in that order;
// `local` may have any shape with that many elements, any device, and be a
// strided view; loads overwrite it in place). A rank with nothing of a
// tensor passes no boxes (and may leave `local` undefined); it still takes
// part in the collective calls.
struct TensorPart {
  Shape shape;
  DType dtype = DType::F32;
  std::vector<Box> boxes;
  Tensor local;
  // Set by the helpers below when their arguments describe no part (a range
  // past the end, an inconsistent spec): reported by the save or load on
  // every rank, as any other bad part is, instead of raised on one rank
  // before a collective the others would wait in.
  std::string problem;
};

// All of `t`: for loading a tensor every rank needs whole (replicated
// parameters), or saving from a single writer.
TensorPart whole_part(const Tensor& t);
// For saving a tensor every rank holds in full (replicated under data
// parallelism): rank `rank` of `world` writes its even share
// [rank*n/world, (rank+1)*n/world) of the n flat elements, so the ranks write
// disjoint parts in parallel.
TensorPart replicated_part(const Tensor& t, int rank, int world);
// Flat elements [begin, end) of a tensor of `shape` and `dtype`, held in
// `local` (e.g. a view into a flat optimizer shard).
TensorPart range_part(const Shape& shape, DType dtype, int64_t begin, int64_t end,
                      const Tensor& local);
// The elements of a tensor of `shape` in `boxes`, held in `local` (in their
// union's row-major order).
TensorPart box_part(const Shape& shape, DType dtype, std::vector<Box> boxes, const Tensor& local);
// This rank's shard of a parameter (or of a moment shaped like it) laid out
// by `spec`, held in `local` (local_shape(spec); a replicated spec with an
// empty logical shape is local's own). For a save where `replicas` ranks
// hold the same shard (its dp replicas, or every rank for a replicated
// parameter), replica `replica` writes only its even share of the shard's
// flat elements, as replicated_part does; loads leave the defaults (the
// whole shard).
TensorPart shard_part(const nn::ParamSpec& spec, const Tensor& local, int replica = 0,
                      int replicas = 1);

using NamedParts = std::vector<std::pair<std::string, TensorPart>>;

struct CheckpointParts {
  int64_t step = 0;
  NamedParts model;  // "/model/<name>"
  NamedParts optim;  // "/optim/<name>"
  // Metadata: the same values on every rank (rank 0's are written).
  std::vector<std::pair<std::string, std::string>> meta_text;
  std::vector<std::pair<std::string, int64_t>> meta_int;
  std::vector<std::pair<std::string, double>> meta_float;
};

// Collective over `comm`: an MPI communicator (see
// parallel::MpiCommunicator; the group that holds the model, e.g. the world)
// or any communicator of size 1, which writes with HDF5's serial driver, as
// save_checkpoint(path, CheckpointData) does. Every rank lists the same
// tensors in the same order with the same shapes and dtypes (checked: a rank
// that differs is named), and for each tensor the ranks' boxes together
// cover every element exactly once (checked over the gathered boxes: an
// overlap names both ranks, a gap the tensor).
// Atomic like save_checkpoint: the ranks write a temporary file, and rank 0
// renames it into place only after every rank has closed it; on an error
// that all ranks see, nothing at `path` changes and the temporary is removed.
void save_checkpoint(const std::string& path, const CheckpointParts& data,
                     parallel::Communicator& comm);

// Collective over `comm` (as for the save): each rank reads its own parts
// (any boxes, e.g. those of a different layout than the one that saved;
// ranks may read the same elements) into their `local` tensors, every
// metadata value asked for and the step. Checks as load_checkpoint does.
void load_checkpoint(const std::string& path, CheckpointParts& into, parallel::Communicator& comm);

// One entry of a checkpoint's table of contents.
struct TensorInfo {
  enum class Kind { kTensor, kText, kInt, kFloat };
  Kind kind = Kind::kTensor;
  std::string name;  // HDF5 path: "/model/wte.weight", "/optim/wte.weight/m", "/meta/seed", "/step"
  Shape shape;       // tensors only
  DType dtype = DType::F32;  // tensors only: the logical dtype (bf16 even though stored as f32)
  std::string value;         // metadata only: the value printed as text
};

// Everything in a (complete, valid) checkpoint, for `keel inspect`: the step
// first, then tensors and metadata in name order.
std::vector<TensorInfo> list_checkpoint(const std::string& path);

// "<dir>/step_00000120.h5"
std::string checkpoint_path(const std::string& dir, int64_t step);

// The checkpoint in `dir` with the highest step among files named
// step_<8+ digits>.h5 (temporaries "<name>.tmp.<pid>" never match), or ""
// when there is none or `dir` does not exist.
std::string latest_checkpoint(const std::string& dir);

// Deletes all but the newest `keep_last` complete checkpoints in `dir`.
// Files named like checkpoints that fail validation are left alone (they
// neither count toward keep_last nor get deleted), as are temporaries.
void prune_checkpoints(const std::string& dir, int64_t keep_last);

// True when `path` opens as a keel checkpoint of a known version with its
// completion marker set.
bool is_complete_checkpoint(const std::string& path);

}  // namespace keel::trainer
