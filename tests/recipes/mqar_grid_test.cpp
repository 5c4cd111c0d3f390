// The MQAR grid (recipes/mqar/grid.h): a grid file is checked by field;
// its cells are the product of families, widths and settings; a cell's
// config carries the cell and the grid's sizes; a tiny grid runs in one
// process, stops sweeping a cell at the target, writes its table and
// results, skips finished cells when rerun, and refuses another grid's
// directory. (Cells spread over mpirun ranks: tests/CMakeLists.txt,
// cli_mqar_grid_np2.)
#include "recipes/mqar/grid.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "parallel/context.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/temp_dir.h"

namespace keel::recipes::mqar {
namespace {

namespace fs = std::filesystem;

void write(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A family config as recipes/mqar/configs holds them, at test size.
std::string family_config(const std::string& model) {
  return "model { " + model +
         " }\n"
         "task { mqar {} }\n"
         "data { synthetic { mqar { vocab_size: 64 num_kv_pairs: 4 seed: 3 } } batch_size: 64 "
         "seq_len: 32 tokenizer: 'byte' }\n"
         "optim { lr: 1e-3 weight_decay: 0.0 }\n"
         "schedule { warmup_steps: 5 decay: 'cosine' }\n"
         "train { steps: 1 seed: 1 }\n";
}

// Two families in `dir`, and a grid over them.
std::string write_grid(const testing::TempDir& dir, const std::string& extra = "") {
  write(dir.file("gpt.pbtxt"),
        family_config("gpt { vocab_size: 64 block_size: 32 n_layer: 2 n_head: 2 n_embd: 32 "
                      "mlp: false }"));
  write(dir.file("mamba.pbtxt"),
        family_config("mamba { vocab_size: 64 n_layer: 1 n_embd: 16 d_state: 4 }"));
  const std::string path = dir.file("grid.pbtxt");
  write(path,
        "config: 'gpt.pbtxt' config: 'mamba.pbtxt'\n"
        "d_model: 16\n"
        "setting { seq_len: 16 num_kv_pairs: 2 } setting { seq_len: 32 num_kv_pairs: 4 }\n"
        "lr: 3e-3 lr: 1e-3\n"
        "num_train: 256 num_test: 64 batch_size: 32 epochs: 2 evals_per_epoch: 2\n"
        "stop_accuracy: 0.99\n"
        "set: 'train.seed=5'\n" +
            extra);
  return path;
}

TEST(MqarGrid, CellsAreTheProductOfFamiliesWidthsAndSettings) {
  testing::TempDir dir("mqar_grid");
  const config::MqarGrid grid = load_grid(write_grid(dir));
  const std::vector<GridCell> cells = grid_cells(grid, dir.path().string());
  ASSERT_EQ(cells.size(), 4u);
  EXPECT_EQ(cells[0].name(), "gpt_d16_T16_kv2");
  EXPECT_EQ(cells[1].name(), "gpt_d16_T32_kv4");
  EXPECT_EQ(cells[2].name(), "mamba_d16_T16_kv2");
  EXPECT_EQ(cells[3].name(), "mamba_d16_T32_kv4");
}

TEST(MqarGrid, ACellsConfigCarriesTheCellAndTheGrid) {
  testing::TempDir dir("mqar_grid");
  const config::MqarGrid grid = load_grid(write_grid(dir));
  const std::vector<GridCell> cells = grid_cells(grid, dir.path().string());
  const config::Config g = cell_config(grid, cells[1], 3e-3, "/x/logs");
  EXPECT_EQ(g.model().gpt().n_embd(), 16);
  EXPECT_EQ(g.model().gpt().block_size(), 32);
  EXPECT_EQ(g.model().gpt().n_head(), 2);  // the family config's own
  EXPECT_EQ(g.data().seq_len(), 32);
  EXPECT_EQ(g.data().batch_size(), 32);
  EXPECT_EQ(g.data().synthetic().mqar().num_kv_pairs(), 4);
  EXPECT_EQ(g.data().synthetic().mqar().num_train(), 256);
  EXPECT_EQ(g.data().synthetic().mqar().num_test(), 64);
  EXPECT_DOUBLE_EQ(g.optim().lr(), 3e-3);
  EXPECT_EQ(g.train().steps(), 2 * 256 / 32);
  EXPECT_EQ(g.train().eval_every(), 4);  // two validations an epoch
  EXPECT_EQ(g.train().eval_batches(), 2);  // the whole test split
  EXPECT_EQ(g.train().stop_metric(), "accuracy");
  EXPECT_DOUBLE_EQ(g.train().stop_at(), 0.99);
  EXPECT_EQ(g.train().seed(), 5u);  // the grid's set
  EXPECT_FALSE(g.checkpoint().save());
  EXPECT_EQ(g.logging().dir(), "/x/logs");
  const config::Config m = cell_config(grid, cells[2], 1e-3, "");
  EXPECT_EQ(m.model().mamba().n_embd(), 16);
  EXPECT_EQ(m.data().seq_len(), 16);
}

TEST(MqarGrid, BadGridsAreRefusedByField) {
  testing::TempDir dir("mqar_grid");
  write_grid(dir);
  auto grid_with = [&](const std::string& text) {
    write(dir.file("bad.pbtxt"), text);
    return dir.file("bad.pbtxt");
  };
  const std::string ok = "config: 'gpt.pbtxt' d_model: 16 setting { seq_len: 16 num_kv_pairs: 2 } ";
  EXPECT_KEEL_ERROR(load_grid(grid_with(ok)), "mqar grid: lr is empty", "bad.pbtxt");
  EXPECT_KEEL_ERROR(load_grid(grid_with(ok + "lr: -1")), "mqar grid: lr holds -1");
  EXPECT_KEEL_ERROR(load_grid(grid_with("d_model: 16 lr: 1e-3")), "mqar grid: config is empty");
  EXPECT_KEEL_ERROR(load_grid(grid_with(ok + "lr: 1e-3 num_train: 10")),
                    "mqar grid: num_train (10) must hold at least one batch of 64");
  EXPECT_KEEL_ERROR(load_grid(grid_with(ok + "lr: 1e-3 stop_accuracy: 1.5")),
                    "mqar grid: stop_accuracy must be in (0, 1]");
  EXPECT_KEEL_ERROR(load_grid(grid_with(ok + "lr: 1e-3 setting { seq_len: 16 }")),
                    "mqar grid: setting needs a positive seq_len and num_kv_pairs");
  EXPECT_KEEL_ERROR(load_grid(grid_with(ok + "lr: 1e-3 widths: 3")), "bad.pbtxt:1:",
                    "widths");
  EXPECT_KEEL_ERROR(load_grid(dir.file("missing.pbtxt")), "missing.pbtxt", "cannot be opened");

  // The family configs: missing, not MQAR, or one family twice.
  const std::string tail = " d_model: 16 setting { seq_len: 16 num_kv_pairs: 2 } lr: 1e-3";
  const std::string d = dir.path().string();
  EXPECT_KEEL_ERROR(grid_cells(load_grid(grid_with("config: 'nope.pbtxt'" + tail)), d),
                    "nope.pbtxt", "cannot be opened");
  write(dir.file("lm.pbtxt"),
        "model { gpt { n_layer: 1 n_head: 1 n_embd: 8 block_size: 8 } }\n"
        "data { shards { train_files: 'x.bin' } batch_size: 4 seq_len: 8 }\n"
        "optim { lr: 1e-3 } train { steps: 1 }\n");
  EXPECT_KEEL_ERROR(grid_cells(load_grid(grid_with("config: 'lm.pbtxt'" + tail)), d),
                    "lm.pbtxt must hold task { mqar {} }");
  EXPECT_KEEL_ERROR(
      grid_cells(load_grid(grid_with("config: 'gpt.pbtxt' config: 'gpt.pbtxt'" + tail)), d),
      "are both family gpt");
  // A cell the family cannot run, named with the cell.
  config::MqarGrid g = load_grid(grid_with("config: 'gpt.pbtxt'" + tail + " set: 'model.gpt.n_head=3'"));
  EXPECT_KEEL_ERROR(cell_config(g, grid_cells(g, d)[0], 1e-3, ""), "n_head",
                    "mqar grid cell gpt_d16_T16_kv2, lr 0.001");
}

TEST(MqarGrid, ATinyGridRunsWritesItsTableAndResumes) {
  testing::TempDir dir("mqar_grid");
  const config::MqarGrid grid = load_grid(write_grid(dir));
  const std::string out = dir.file("out");
  parallel::ParallelContext ctx;
  std::ostringstream log;
  std::vector<config::MqarCellResult> res =
      run_grid(grid, dir.path().string(), out, ctx.world(), log);
  ASSERT_EQ(res.size(), 4u) << log.str();
  for (const auto& r : res) {
    SCOPED_TRACE(r.family() + " " + std::to_string(r.seq_len()));
    ASSERT_GE(r.run_size(), 1);
    // The sweep goes on only while no rate reached the target.
    for (int i = 0; i + 1 < r.run_size(); ++i) EXPECT_LT(r.run(i).accuracy(), 0.99);
    EXPECT_EQ(r.run_size() == 2, r.run(0).accuracy() < 0.99);
    double best = 0;
    for (const auto& run : r.run()) {
      best = std::max(best, run.accuracy());
      EXPECT_GE(run.accuracy(), 0.0);
      EXPECT_LE(run.accuracy(), 1.0);
      if (run.stopped_early())
        EXPECT_GE(run.accuracy(), 0.99);
      else
        EXPECT_EQ(run.steps(), 16);  // 2 epochs of 256 / 32
    }
    EXPECT_DOUBLE_EQ(r.best_accuracy(), best);
    EXPECT_GT(r.parameters(), 0);
  }
  EXPECT_EQ(res[0].family(), "gpt");
  EXPECT_EQ(res[3].family(), "mamba");
  EXPECT_NE(log.str().find("[4/4 cells"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("ETA"), std::string::npos);
  // Each run's own log and metrics.
  EXPECT_TRUE(fs::exists(out + "/cells/gpt_d16_T16_kv2/lr_0/train.log"));
  EXPECT_TRUE(fs::exists(out + "/cells/gpt_d16_T16_kv2/lr_0/logs/metrics.jsonl"));
  EXPECT_NE(read(out + "/cells/gpt_d16_T16_kv2/lr_0/logs/metrics.jsonl").find("val_accuracy"),
            std::string::npos);

  const std::string table = read(out + "/table.md");
  EXPECT_EQ(table, results_table(grid, res));
  EXPECT_NE(table.find("| family | d_model | T=16, kv=2 | T=32, kv=4 |"), std::string::npos)
      << table;
  EXPECT_NE(table.find("| gpt | 16 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| mamba | 16 |"), std::string::npos) << table;
  const std::string jsonl = read(out + "/results.jsonl");
  EXPECT_EQ(std::count(jsonl.begin(), jsonl.end(), '\n'), 4);
  EXPECT_NE(jsonl.find("\"best_accuracy\""), std::string::npos);

  // A rerun trains nothing and returns the same results.
  std::ostringstream again;
  std::vector<config::MqarCellResult> res2 =
      run_grid(grid, dir.path().string(), out, ctx.world(), again);
  EXPECT_NE(again.str().find("4 done earlier"), std::string::npos) << again.str();
  EXPECT_EQ(again.str().find(" lr "), std::string::npos) << again.str();
  ASSERT_EQ(res2.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(res2[i].DebugString(), res[i].DebugString());

  // Another grid is refused in this directory.
  config::MqarGrid other = grid;
  other.set_epochs(3);
  EXPECT_KEEL_ERROR(run_grid(other, dir.path().string(), out, ctx.world(), again),
                    "holds the results of another grid");
}

TEST(MqarGrid, TheTableMarksMissingCells) {
  testing::TempDir dir("mqar_grid");
  const config::MqarGrid grid = load_grid(write_grid(dir));
  config::MqarCellResult r;
  r.set_family("gpt");
  r.set_d_model(16);
  r.set_seq_len(32);
  r.set_num_kv_pairs(4);
  r.set_best_accuracy(0.5);
  EXPECT_EQ(results_table(grid, {r}),
            "| family | d_model | T=16, kv=2 | T=32, kv=4 |\n"
            "|---|---:|---:|---:|\n"
            "| gpt | 16 | - | 0.500 |\n");
}

}  // namespace
}  // namespace keel::recipes::mqar
