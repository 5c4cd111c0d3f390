#include "recipes/mqar/grid.h"

#include <fcntl.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "recipes/recipe.h"
#include "trainer/trainer.h"

namespace keel::recipes::mqar {

namespace fs = std::filesystem;
namespace pb = google::protobuf;

namespace {

using Clock = std::chrono::steady_clock;

void grid_check(bool ok, const std::string& field, const std::string& why) {
  KEEL_CHECK(ok, "mqar grid: ", field, " ", why);
}

// "0.001" rather than "1e-03"; enough digits to tell sweep values apart.
std::string num(double v) {
  std::ostringstream s;
  s << std::setprecision(4) << v;
  return s.str();
}

std::string minutes(double seconds) {
  const int64_t s = int64_t(std::lround(seconds));
  std::ostringstream o;
  if (s >= 3600) o << s / 3600 << "h";
  if (s >= 60) o << std::setw(s >= 3600 ? 2 : 1) << std::setfill('0') << (s / 60) % 60 << "m";
  o << std::setw(s >= 60 ? 2 : 1) << std::setfill('0') << s % 60 << "s";
  return o.str();
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Written whole under a temporary name, then renamed: a reader (a rank
// counting results, a rerun) never sees half a file.
void write_file(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << text;
    KEEL_CHECK(out.good(), "mqar grid: cannot write ", tmp.string());
  }
  fs::rename(tmp, p);
}

// A cell's result file, or false when there is none (or it is unreadable:
// the cell runs again).
bool load_result(const fs::path& p, config::MqarCellResult& r) {
  if (!fs::exists(p)) return false;
  return pb::TextFormat::ParseFromString(read_file(p), &r) && r.has_best_accuracy();
}

// Claims a cell for this rank: true when the claim file did not exist.
bool claim(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

int64_t count_results(const fs::path& cells_dir) {
  int64_t n = 0;
  for (const auto& e : fs::directory_iterator(cells_dir))
    n += e.path().extension() == ".pbtxt";
  return n;
}

// The family's section of model, whose fields the cell sets by name.
const pb::Message& family_section(const config::Config& cfg) {
  const pb::Message& model = cfg.model();
  const pb::OneofDescriptor* o = model.GetDescriptor()->FindOneofByName("family");
  KEEL_ASSERT(o != nullptr, "config::Model has no family oneof");
  const pb::FieldDescriptor* f = model.GetReflection()->GetOneofFieldDescriptor(model, o);
  KEEL_ASSERT(f != nullptr, "a family-less config reached the grid");
  return model.GetReflection()->GetMessage(model, f);
}

// One run of a cell: its config trained in a world of one.
config::MqarCellResult::Run train_run(const config::Config& cfg, const fs::path& run_dir,
                                      int64_t& parameters) {
  parallel::ParallelContext ctx(trainer::training_device(cfg.train().device()));
  Recipe r = make_recipe(cfg, ctx);
  parameters = r.module->num_parameters();
  fs::create_directories(run_dir);
  std::ofstream log(run_dir / "train.log");
  trainer::TrainOptions opt;
  opt.out = &log;
  const auto t0 = Clock::now();
  const trainer::TrainResult res = trainer::train(cfg, r, ctx, opt);
  config::MqarCellResult::Run run;
  run.set_lr(cfg.optim().lr());
  double best = 0;
  for (const auto& [step, metrics] : res.val_metrics)
    for (const auto& [name, v] : metrics)
      if (name == "accuracy") best = std::max(best, v);
  run.set_accuracy(best);
  run.set_steps(res.end_step);
  run.set_stopped_early(res.stopped_early);
  run.set_seconds(std::chrono::duration<double>(Clock::now() - t0).count());
  return run;
}

}  // namespace

config::MqarGrid load_grid(const std::string& path) {
  config::MqarGrid g;
  trainer::load_text_file(path, g);
  const std::string at = "(" + path + ")";
  grid_check(g.config_size() > 0, "config", "is empty: name at least one family config " + at);
  grid_check(g.d_model_size() > 0, "d_model", "is empty " + at);
  for (int64_t d : g.d_model()) grid_check(d > 0, "d_model", "holds " + std::to_string(d) + " " + at);
  grid_check(g.setting_size() > 0, "setting", "is empty " + at);
  for (const auto& s : g.setting())
    grid_check(s.seq_len() > 0 && s.num_kv_pairs() > 0, "setting",
               "needs a positive seq_len and num_kv_pairs, got (" + std::to_string(s.seq_len()) +
                   ", " + std::to_string(s.num_kv_pairs()) + ") " + at);
  grid_check(g.lr_size() > 0, "lr", "is empty: give the sweep's learning rates " + at);
  for (double lr : g.lr()) grid_check(lr > 0, "lr", "holds " + num(lr) + " " + at);
  grid_check(g.batch_size() > 0, "batch_size", "must be positive " + at);
  grid_check(g.num_train() >= g.batch_size(), "num_train",
             "(" + std::to_string(g.num_train()) + ") must hold at least one batch of " +
                 std::to_string(g.batch_size()) + " " + at);
  grid_check(g.num_test() >= g.batch_size(), "num_test",
             "(" + std::to_string(g.num_test()) + ") must hold at least one batch of " +
                 std::to_string(g.batch_size()) + " " + at);
  grid_check(g.epochs() >= 1, "epochs", "must be >= 1 " + at);
  grid_check(g.evals_per_epoch() >= 1 && g.evals_per_epoch() <= g.num_train() / g.batch_size(),
             "evals_per_epoch", "must be in [1, steps per epoch] " + at);
  grid_check(g.stop_accuracy() > 0 && g.stop_accuracy() <= 1, "stop_accuracy",
             "must be in (0, 1] " + at);
  return g;
}

std::string GridCell::name() const {
  return family + "_d" + std::to_string(d_model) + "_T" + std::to_string(seq_len) + "_kv" +
         std::to_string(num_kv_pairs);
}

std::vector<GridCell> grid_cells(const config::MqarGrid& grid, const std::string& grid_dir) {
  std::vector<GridCell> cells;
  std::map<std::string, std::string> seen;  // family -> config path
  for (const std::string& file : grid.config()) {
    const std::string path = (fs::path(grid_dir) / file).string();
    config::Config base = trainer::load_config(path);
    const std::string family = family_of(base).name;
    KEEL_CHECK(base.task().has_mqar() && base.data().synthetic().has_mqar(), "mqar grid: config ",
               path, " must hold task { mqar {} } and data { synthetic { mqar { ... } } }");
    KEEL_CHECK(seen.emplace(family, path).second, "mqar grid: configs ", seen[family], " and ", path,
               " are both family ", family, "; a grid holds one config per family");
    for (int64_t d : grid.d_model())
      for (const auto& s : grid.setting())
        cells.push_back(GridCell{base, family, d, s.seq_len(), s.num_kv_pairs()});
  }
  return cells;
}

config::Config cell_config(const config::MqarGrid& grid, const GridCell& cell, double lr,
                           const std::string& logs_dir) {
  config::Config cfg = cell.base;
  const std::string model = "model." + cell.family + ".";
  const int64_t steps_per_epoch = grid.num_train() / grid.batch_size();
  const int64_t eval_every = std::max<int64_t>(1, steps_per_epoch / grid.evals_per_epoch());
  std::vector<std::string> sets = {
      model + "n_embd=" + std::to_string(cell.d_model),
      "data.seq_len=" + std::to_string(cell.seq_len),
      "data.batch_size=" + std::to_string(grid.batch_size()),
      "data.synthetic.mqar.num_kv_pairs=" + std::to_string(cell.num_kv_pairs),
      "data.synthetic.mqar.num_train=" + std::to_string(grid.num_train()),
      "data.synthetic.mqar.num_test=" + std::to_string(grid.num_test()),
      "optim.lr=" + num(lr),
      "train.steps=" + std::to_string(grid.epochs() * steps_per_epoch),
      "train.eval_every=" + std::to_string(eval_every),
      "train.log_every=" + std::to_string(eval_every),
      "train.eval_batches=" + std::to_string(grid.num_test() / grid.batch_size()),
      "train.stop_metric=accuracy",
      "train.stop_at=" + num(grid.stop_accuracy()),
      "checkpoint.save=false",
      "logging.dir=" + logs_dir,
  };
  // Families with learned positions or a filter length hold a block_size.
  if (family_section(cfg).GetDescriptor()->FindFieldByName("block_size"))
    sets.push_back(model + "block_size=" + std::to_string(cell.seq_len));
  for (const std::string& s : sets) trainer::apply_override(cfg, s);
  for (const std::string& s : grid.set()) trainer::apply_override(cfg, s);
  try {
    validate_config(cfg);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (mqar grid cell " + cell.name() + ", lr " + num(lr) +
                ")");
  }
  return cfg;
}

std::vector<config::MqarCellResult> run_grid(const config::MqarGrid& grid,
                                             const std::string& grid_dir,
                                             const std::string& out_dir,
                                             parallel::Communicator& world, std::ostream& out) {
  const fs::path cells_dir = fs::path(out_dir) / "cells";
  std::vector<GridCell> cells = grid_cells(grid, grid_dir);
  // Every cell's config is checked before any rank trains, so a bad grid
  // fails at once rather than an hour in.
  for (const GridCell& c : cells)
    for (double lr : grid.lr()) cell_config(grid, c, lr, "");
  // Claimed widest and longest first: the last cells to start are short.
  std::vector<size_t> order(cells.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return cells[a].seq_len * cells[a].d_model > cells[b].seq_len * cells[b].d_model;
  });

  if (world.rank() == 0) {
    fs::create_directories(cells_dir);
    // Results are reused only by a rerun of the same grid.
    std::string text;
    pb::TextFormat::PrintToString(grid, &text);
    const fs::path stored = fs::path(out_dir) / "grid.pbtxt";
    KEEL_CHECK(!fs::exists(stored) || read_file(stored) == text, "mqar grid: ", out_dir,
               " holds the results of another grid (", stored.string(),
               " differs); give another --out or remove it");
    write_file(stored, text);
    // Claims left by an interrupted run whose cells never finished.
    for (const auto& e : fs::directory_iterator(cells_dir))
      if (e.path().extension() == ".claim") {
        config::MqarCellResult r;
        fs::path result = e.path();
        if (!load_result(result.replace_extension(".pbtxt"), r)) fs::remove(e.path());
      }
  }
  world.barrier();

  // This rank's share of the node's cores, unless the grid sets threads.
  const bool threads_set = std::any_of(grid.set().begin(), grid.set().end(), [](const auto& s) {
    return s.rfind("train.threads=", 0) == 0;
  });
  if (!threads_set)
    omp_set_num_threads(std::max(1, omp_get_num_procs() / std::max(1, trainer::local_size_from_env())));

  const auto start = Clock::now();
  const int64_t total = int64_t(cells.size()), done_before = count_results(cells_dir);
  if (world.rank() == 0)
    out << "mqar grid: " << total << " cells (" << grid.config_size() << " families x "
        << grid.d_model_size() << " widths x " << grid.setting_size() << " settings), "
        << grid.lr_size() << " learning rates each, on " << world.size() << " rank(s); "
        << done_before << " done earlier\n"
        << std::flush;
  for (size_t index : order) {
    const GridCell& cell = cells[index];
    const fs::path result_path = cells_dir / (cell.name() + ".pbtxt");
    config::MqarCellResult r;
    if (load_result(result_path, r) || !claim(cells_dir / (cell.name() + ".claim"))) continue;
    r.set_family(cell.family);
    r.set_d_model(cell.d_model);
    r.set_seq_len(cell.seq_len);
    r.set_num_kv_pairs(cell.num_kv_pairs);
    for (int i = 0; i < grid.lr_size(); ++i) {
      const fs::path run_dir = cells_dir / cell.name() / ("lr_" + std::to_string(i));
      int64_t parameters = 0;
      const config::Config cfg =
          cell_config(grid, cell, grid.lr(i), (run_dir / "logs").string());
      config::MqarCellResult::Run run = train_run(cfg, run_dir, parameters);
      r.set_parameters(parameters);
      std::ostringstream line;
      line << "  " << cell.name() << " lr " << num(run.lr()) << ": accuracy " << std::fixed
           << std::setprecision(3) << run.accuracy() << " after " << run.steps() << " steps"
           << (run.stopped_early() ? " (stopped early)" : "") << ", " << minutes(run.seconds())
           << "\n";
      out << line.str() << std::flush;
      if (!r.has_best_accuracy() || run.accuracy() > r.best_accuracy()) {
        r.set_best_accuracy(run.accuracy());
        r.set_best_lr(run.lr());
      }
      *r.add_run() = run;
      if (run.accuracy() >= grid.stop_accuracy()) break;
    }
    std::string text;
    pb::TextFormat::PrintToString(r, &text);
    write_file(result_path, text);
    const int64_t done = count_results(cells_dir);
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const double eta = elapsed / double(std::max<int64_t>(1, done - done_before)) *
                       double(total - done);
    std::ostringstream line;
    line << "[" << done << "/" << total << " cells, " << minutes(elapsed) << " elapsed, ETA "
         << minutes(eta) << "] " << cell.name() << ": best accuracy " << std::fixed
         << std::setprecision(3) << r.best_accuracy() << " at lr " << num(r.best_lr()) << "\n";
    out << line.str() << std::flush;
  }
  world.barrier();

  std::vector<config::MqarCellResult> results;
  if (world.rank() != 0) return results;
  // In the grid's order (family, width, setting), for the table and the plot.
  std::string jsonl;
  for (const GridCell& cell : cells) {
    config::MqarCellResult r;
    if (!load_result(cells_dir / (cell.name() + ".pbtxt"), r)) continue;
    std::string json;
    pb::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    o.always_print_primitive_fields = true;
    KEEL_ASSERT(pb::util::MessageToJsonString(r, &json, o).ok(), "json of ", cell.name());
    jsonl += json + "\n";
    results.push_back(r);
  }
  write_file(fs::path(out_dir) / "results.jsonl", jsonl);
  write_file(fs::path(out_dir) / "table.md", results_table(grid, results));
  return results;
}

std::string results_table(const config::MqarGrid& grid,
                          const std::vector<config::MqarCellResult>& results) {
  std::ostringstream t;
  t << "| family | d_model |";
  for (const auto& s : grid.setting())
    t << " T=" << s.seq_len() << ", kv=" << s.num_kv_pairs() << " |";
  t << "\n|---|---:|";
  for (int i = 0; i < grid.setting_size(); ++i) t << "---:|";
  t << "\n";
  std::vector<std::string> families;
  for (const auto& r : results)
    if (std::find(families.begin(), families.end(), r.family()) == families.end())
      families.push_back(r.family());
  for (const std::string& f : families)
    for (int64_t d : grid.d_model()) {
      t << "| " << f << " | " << d << " |";
      for (const auto& s : grid.setting()) {
        auto it = std::find_if(results.begin(), results.end(), [&](const auto& r) {
          return r.family() == f && r.d_model() == d && r.seq_len() == s.seq_len() &&
                 r.num_kv_pairs() == s.num_kv_pairs();
        });
        if (it == results.end()) {
          t << " - |";
          continue;
        }
        t << " " << std::fixed << std::setprecision(3) << it->best_accuracy() << " |";
      }
      t << "\n";
    }
  return t.str();
}

}  // namespace keel::recipes::mqar
