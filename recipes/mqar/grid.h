// Zoology's MQAR comparison as one command (`keel mqar --grid FILE --out
// DIR`): a grid (config::MqarGrid) of family configs x d_model x (seq_len,
// num_kv_pairs) cells, each trained over a learning-rate sweep with early
// stopping on validation accuracy, the best rate kept, and the table of
// best accuracies.
//
// Cells are independent jobs. Under mpirun every rank trains whole cells
// alone (a world of one, with its share of the node's cores), taking the
// next cell nobody has claimed: a claim is a file created exclusively in
// DIR/cells, so ranks that finish early take more cells, and the ranks
// need not talk until the end. A finished cell leaves DIR/cells/<cell>.pbtxt
// (config::MqarCellResult); a rerun of the same grid skips those, so an
// interrupted grid resumes. Each run's progress, JSONL and TensorBoard logs
// go to DIR/cells/<cell>/lr_<i>/. At the end the lead rank writes
// DIR/results.jsonl (one JSON object per cell, for scripts/mqar_plot.py)
// and DIR/table.md.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "trainer/config.h"

namespace keel::recipes::mqar {

// The grid file, parsed and checked: keel::Error naming the file and field.
config::MqarGrid load_grid(const std::string& path);

struct GridCell {
  config::Config base;  // the family's config, as its file holds it
  std::string family;   // "gpt", "hyena", "mamba"
  int64_t d_model = 0, seq_len = 0, num_kv_pairs = 0;
  std::string name() const;  // "gpt_d64_T64_kv4"
};

// Every cell of the grid, family-major in the grid's order. The family
// configs are read relative to `grid_dir`, and each must hold task { mqar }
// and data { synthetic { mqar } }; one config per family.
std::vector<GridCell> grid_cells(const config::MqarGrid& grid, const std::string& grid_dir);

// The config that trains `cell` at learning rate `lr`: the cell's width,
// sequence and pairs, the grid's data sizes, epochs (as train.steps),
// validation over the whole test split evals_per_epoch times an epoch,
// early stopping at stop_accuracy, no checkpoints, logs in `logs_dir`; then
// the grid's `set` overrides. Validated as a run's config would be.
config::Config cell_config(const config::MqarGrid& grid, const GridCell& cell, double lr,
                           const std::string& logs_dir);

// Collective over `world`: trains every cell without a result in
// out_dir/cells, spread over the ranks, and returns every cell's result
// (on the lead rank; others get an empty list). Progress lines, one per
// run and one per cell with the grid's count and ETA, go to `out`.
std::vector<config::MqarCellResult> run_grid(const config::MqarGrid& grid,
                                             const std::string& grid_dir,
                                             const std::string& out_dir,
                                             parallel::Communicator& world, std::ostream& out);

// The Markdown table of best accuracies: a row per family and d_model, a
// column per setting, "-" for a cell without a result.
std::string results_table(const config::MqarGrid& grid,
                          const std::vector<config::MqarCellResult>& results);

}  // namespace keel::recipes::mqar
