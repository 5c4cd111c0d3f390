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
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "nn/module.h"

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
