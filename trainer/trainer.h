// The training loop, model-agnostic: a recipe hands it a module and a loss
// function. It runs AdamW with warmup/decay, global-norm clipping, gradient
// accumulation, periodic validation, progress/JSONL/TensorBoard metrics, and
// HDF5 checkpoints from which a run resumes bit for bit.
//
// Device and precision: the model is moved to train.device before the
// optimizer is built, batches follow it, and the forward runs at
// train.precision (fp32; bf16 or fp16 compute over f32 master weights and
// moments). fp16 scales the loss (LossScaler) and skips the steps whose
// gradients overflow; the scale is saved in checkpoints.
//
// Data parallel: given a dp communicator, every rank trains its rows of the
// same global batch (TokenLoader world/rank), gradients are averaged across
// ranks in buckets overlapped with backward (GradientSync), or with
// parallel.zero_stage = 1 reduce-scattered into a sharded AdamW (ZeRO-1);
// clipping uses the global norm, the reported loss is the mean over ranks,
// rank 0 alone prints and writes metrics, and checkpoints are written and
// read collectively (parallel HDF5), so any dp size resumes any other.
#pragma once

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "nn/module.h"
#include "parallel/communicator.h"
#include "trainer/config.h"

namespace keel::trainer {

// loss(inputs (B, T), targets (B, T)) -> scalar mean loss. The batches are
// on the model's device; train() and evaluate() call it under an
// AutocastGuard for train.precision, and the loss must come out f32.
using LossFn = std::function<Tensor(const Tensor&, const Tensor&)>;

struct TrainOptions {
  std::string resume;          // "", a checkpoint path, or "auto" (latest in checkpoint.dir)
  std::ostream* out = nullptr;  // progress lines; null: std::cout
  int64_t stop_after = -1;     // >= 0: stop (and checkpoint) once this step count is reached
  // The data-parallel group (an MPI communicator; its size must equal
  // parallel.dp), or null for a single process. Every rank of the group
  // calls train() with the same config and an identically initialised model.
  parallel::Communicator* dp = nullptr;
};

struct TrainResult {
  int64_t start_step = 0;                          // steps done before this run (resume)
  int64_t end_step = 0;                            // steps done at the end
  std::vector<double> losses;  // training loss of each step run here (mean over dp ranks)
  std::vector<std::pair<int64_t, double>> val_losses;  // (step, loss)
  std::string last_checkpoint;                     // path, or empty
  int64_t skipped_steps = 0;  // fp16 steps dropped for overflowing gradients
};

TrainResult train(const config::Config& cfg, nn::Module& model, const LossFn& loss_fn,
                  const TrainOptions& opt = {});

// Mean loss over `batches` batches of the validation files (from their
// start). With `dp`, collective: each rank evaluates its rows of every batch
// and all get the mean over ranks.
double evaluate(const config::Config& cfg, nn::Module& model, const LossFn& loss_fn,
                int64_t batches, parallel::Communicator* dp = nullptr);

// The device train.device names for this process: cpu, cuda:N, or for plain
// "cuda" GPU (node-local rank mod visible GPUs), the node-local rank read
// from the launcher's environment (Open MPI, Slurm, MPICH, torchrun style
// LOCAL_RANK; 0 when none is set). A GPU asked for in a build without CUDA,
// on a machine without one, or past the last visible one is a keel::Error.
Device training_device(const std::string& name);

// The compute dtype train.precision names: F32, BF16 or F16.
DType compute_dtype(const config::Config& cfg);

// The config a checkpoint was trained with (its /meta/config text).
config::Config checkpoint_config(const std::string& path);
// `path` itself, or the latest checkpoint when `path` is a directory.
std::string resolve_checkpoint(const std::string& path);

}  // namespace keel::trainer
