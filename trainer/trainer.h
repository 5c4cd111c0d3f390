// The training loop, model- and layout-agnostic: a recipe hands it a
// Workload (module, data, loss) and the CLI or a test a ParallelContext.
// Each step: batch -> loss -> backward -> gradient sync -> clip -> step ->
// log / eval / save, with AdamW under a warmup/decay schedule, global-norm
// clipping, gradient accumulation, progress / JSONL / TensorBoard metrics,
// and checkpoints from which a run resumes bit for bit.
//
// Device and precision: the model is moved to ctx.device() before the
// optimizer is built, batches follow it, and the forward runs at
// train.precision (fp32; bf16 or fp16 compute over f32 master weights and
// moments). fp16 scales the loss (LossScaler) and skips the steps whose
// gradients overflow; the scale is saved in checkpoints.
//
// Layouts: every rank trains its rows of the same global batch; the
// Optimizer (trainer/optimizer.h) reduces gradients across the ranks that
// hold the same parameters (or, ZeRO-1, reduce-scatters them into sharded
// moments); the reported loss and metrics are means over the ranks; the
// lead rank alone prints and writes metrics; checkpoints are collective,
// so any layout resumes any other.
#pragma once

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "parallel/context.h"
#include "trainer/config.h"
#include "trainer/workload.h"

namespace keel::trainer {

struct TrainOptions {
  std::string resume;           // "", a checkpoint path, or "auto" (latest in checkpoint.dir)
  std::ostream* out = nullptr;  // progress lines; null: std::cout
  int64_t stop_after = -1;      // >= 0: stop (and checkpoint) once this step count is reached
};

struct TrainResult {
  int64_t start_step = 0;      // steps done before this run (resume)
  int64_t end_step = 0;        // steps done at the end
  std::vector<double> losses;  // training loss of each step run here (mean over the ranks)
  std::vector<std::pair<int64_t, double>> val_losses;    // (step, loss)
  std::vector<std::pair<int64_t, Metrics>> val_metrics;  // (step, the loss's metrics), if any
  std::string last_checkpoint;                           // path, or empty
  int64_t skipped_steps = 0;  // fp16 steps dropped for overflowing gradients
  bool stopped_early = false;  // train.stop_metric reached train.stop_at at end_step
};

// Collective over ctx's world: every rank calls it with the same config and
// a workload built by the same recipe from the same context. cfg.parallel
// must describe ctx's mesh.
TrainResult train(const config::Config& cfg, const Workload& work, parallel::ParallelContext& ctx,
                  const TrainOptions& opt = {});

// Mean loss over `batches` batches of the validation split (from its
// start), at train.precision on the model's device. Collective: each rank
// evaluates its rows of every batch and all get the mean over ranks.
double evaluate(const config::Config& cfg, const Workload& work, parallel::ParallelContext& ctx,
                int64_t batches);
// The same with the mean of the loss's named metrics (accuracy, say).
struct EvalResult {
  double loss = 0;
  Metrics metrics;
};
EvalResult evaluate_with_metrics(const config::Config& cfg, const Workload& work,
                                 parallel::ParallelContext& ctx, int64_t batches);

// The device train.device names for this process: cpu, cuda:N, or for plain
// "cuda" GPU (node-local rank mod visible GPUs), the node-local rank read
// from the launcher's environment (Open MPI, Slurm, MPICH, torchrun style
// LOCAL_RANK; 0 when none is set). A GPU asked for in a build without CUDA,
// on a machine without one, or past the last visible one is a keel::Error.
Device training_device(const std::string& name);

// How many ranks the launcher put on this node (Open MPI, Slurm, MPICH or
// torchrun style environment), 0 when it does not say.
int local_size_from_env();

// The compute dtype train.precision names: F32, BF16 or F16.
DType compute_dtype(const config::Config& cfg);

// The config a checkpoint was trained with (its /meta/config text).
config::Config checkpoint_config(const std::string& path);
// `path` itself, or the latest checkpoint when `path` is a directory.
std::string resolve_checkpoint(const std::string& path);

}  // namespace keel::trainer
