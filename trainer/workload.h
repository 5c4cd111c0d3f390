// What a recipe hands the trainer: a module, the data it trains on and its
// loss. The trainer knows no family and no task; it moves batches of named
// tensors to the model's device, calls the loss under the compute
// precision, and saves the data source's position in checkpoints.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace keel::trainer {

// One micro-batch: named tensors (for causal LM, "inputs" and "targets",
// each (B / data ranks, T)), this rank's rows.
struct Batch {
  std::vector<std::pair<std::string, Tensor>> tensors;

  // keel::Error naming the missing tensor and those present.
  const Tensor& at(const std::string& name) const;
  Batch to(Device device) const;
};

// Named values with one entry per name, e.g. a data position or metrics.
using NamedInts = std::vector<std::pair<std::string, int64_t>>;
using Metrics = std::vector<std::pair<std::string, double>>;

// A stream of batches. The position is saved in checkpoints (as
// /meta/data_<name>) and restored on resume, so a resumed run sees the
// batches the unbroken run would have. It is one value for the whole run,
// the same on every rank (each rank reads its rows of the same global
// batch): a collective save refuses metadata that differs between ranks.
class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual Batch next() = 0;
  virtual NamedInts position() const = 0;  // of the batch next() returns next
  // keel::Error when the position does not fit this source (other files).
  virtual void set_position(const NamedInts& position) = 0;
  // Tokens in one global micro-batch (all ranks), for tokens/s.
  virtual int64_t tokens_per_batch() const = 0;
};

enum class Split { Train, Val };

// The loss of one micro-batch: an f32 scalar (the mean over this rank's
// part of the batch; the trainer averages over data ranks) and named
// metrics, logged beside it (averaged likewise).
struct LossOutput {
  Tensor loss;
  Metrics metrics;
};
using LossFn = std::function<LossOutput(const Batch&)>;

struct Workload {
  std::shared_ptr<nn::Module> module;
  LossFn loss;
  // A fresh source from the split's start. A Val source may be absent (the
  // config has no validation data): has_val says.
  std::function<std::unique_ptr<DataSource>(Split)> data;
  std::function<bool()> has_val = [] { return false; };
};

}  // namespace keel::trainer
