// A run's checkpoint: the weights, the optimizer's moments and everything
// else an exact resume needs (step, RNG streams, data position, loss
// scale, config text), written and read collectively over the context's
// world through the one checkpoint path (trainer/checkpoint.h), whatever
// the layout; a single process is a world of one.
#pragma once

#include <string>

#include "parallel/context.h"
#include "trainer/config.h"
#include "trainer/optim.h"
#include "trainer/optimizer.h"
#include "trainer/workload.h"

namespace keel::trainer {

// The pieces of a run that a checkpoint holds.
struct RunState {
  nn::Module& model;
  Optimizer& optimizer;
  DataSource& data;
  LossScaler& scaler;
  parallel::ParallelContext& ctx;
};

// Collective: writes checkpoint `path` at `step`.
void save_run(const std::string& path, int64_t step, const config::Config& cfg, RunState& state);

// Collective: restores `state` from checkpoint `path`; returns its step.
// The loss scaler's state is restored only from an fp16 run into an fp16
// run (another run's saved scale of 1 means nothing to fp16).
int64_t load_run(const std::string& path, const config::Config& cfg, RunState& state);

}  // namespace keel::trainer
