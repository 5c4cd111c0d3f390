// The training loop, model-agnostic: a recipe hands it a module and a loss
// function. It runs AdamW with warmup/decay, global-norm clipping, gradient
// accumulation, periodic validation, progress/JSONL/TensorBoard metrics, and
// HDF5 checkpoints from which a run resumes bit for bit.
#pragma once

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "nn/module.h"
#include "trainer/config.h"

namespace keel::trainer {

// loss(inputs (B, T), targets (B, T)) -> scalar mean loss.
using LossFn = std::function<Tensor(const Tensor&, const Tensor&)>;

struct TrainOptions {
  std::string resume;          // "", a checkpoint path, or "auto" (latest in checkpoint.dir)
  std::ostream* out = nullptr;  // progress lines; null: std::cout
  int64_t stop_after = -1;     // >= 0: stop (and checkpoint) once this step count is reached
};

struct TrainResult {
  int64_t start_step = 0;                          // steps done before this run (resume)
  int64_t end_step = 0;                            // steps done at the end
  std::vector<double> losses;                      // training loss of each step run here
  std::vector<std::pair<int64_t, double>> val_losses;  // (step, loss)
  std::string last_checkpoint;                     // path, or empty
};

TrainResult train(const config::Config& cfg, nn::Module& model, const LossFn& loss_fn,
                  const TrainOptions& opt = {});

// Mean loss over `batches` batches of the validation files (from their start).
double evaluate(const config::Config& cfg, nn::Module& model, const LossFn& loss_fn,
                int64_t batches);

// The config a checkpoint was trained with (its /meta/config text).
config::Config checkpoint_config(const std::string& path);
// `path` itself, or the latest checkpoint when `path` is a directory.
std::string resolve_checkpoint(const std::string& path);

}  // namespace keel::trainer
