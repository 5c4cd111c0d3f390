// The keel command: train, prepare, generate, eval, inspect.
//
//   keel prepare --tokenizer byte|gpt2 --out DIR [--val-fraction F] [--shard-tokens N] FILE...
//   keel train CONFIG [--set field=value]... [--resume PATH|auto] [--stop-after N]
//   keel eval CHECKPOINT|DIR [--batches N] [--set field=value]...
//   keel generate CHECKPOINT|DIR --prompt TEXT [--tokens N] [--temperature T] [--top-k K] [--seed
//   S] keel inspect CHECKPOINT
//   keel mqar --grid GRID --out DIR [--set field=value]...
//
// Under mpirun, `train` builds the process grid from parallel.* (the world
// size must equal dp*cp*ep*tp) into a ParallelContext, the family's recipe
// on it (recipes/registry.cpp), and trains; rank 0 prints. Nothing here
// knows a family. A rank that fails prints its error (naming the rank) and
// aborts the whole job, so no rank is left waiting in a collective.
#include <mpi.h>

#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "parallel/context.h"
#include "recipes/mqar/grid.h"
#include "recipes/recipe.h"
#include "trainer/checkpoint.h"
#include "trainer/shard.h"
#include "trainer/shard_source.h"
#include "trainer/tokenizer.h"
#include "trainer/trainer.h"

namespace {

using namespace keel;

constexpr const char* kUsage = R"(usage: keel <command> [options]

commands:
  prepare   --tokenizer byte|gpt2 --out DIR [--val-fraction F] [--shard-tokens N] FILE...
            tokenise text files into token shards (train_*.bin, val_*.bin)
  train     CONFIG [--set field=value]... [--resume PATH|auto] [--stop-after N]
            train the model a .pbtxt config describes
  eval      CHECKPOINT|DIR [--batches N] [--set field=value]...
            validation loss of a checkpoint, on its train.device at its train.precision
            (--set train.device=cpu evaluates a GPU run's checkpoint on the CPU)
  generate  CHECKPOINT|DIR --prompt TEXT [--tokens N] [--temperature T] [--top-k K] [--seed S]
            sample text from a checkpoint
  inspect   CHECKPOINT
            list a checkpoint's tensors, shapes and metadata
  mqar      --grid GRID --out DIR [--set field=value]...
            Zoology's MQAR grid: families x widths x (seq_len, kv pairs), each over a
            learning-rate sweep with early stopping; writes DIR/table.md and
            DIR/results.jsonl (cells spread over mpirun's ranks; a rerun resumes)
)";

// Options: --name value pairs (repeatable) and positional arguments.
struct Args {
  std::vector<std::string> positional;
  std::multimap<std::string, std::string> options;

  std::string get(const std::string& name, const std::string& fallback = "") const {
    auto it = options.find(name);
    return it == options.end() ? fallback : it->second;
  }
  std::vector<std::string> all(const std::string& name) const {
    std::vector<std::string> out;
    for (auto [a, b] = options.equal_range(name); a != b; ++a) out.push_back(a->second);
    return out;
  }
  double number(const std::string& name, double fallback) const {
    std::string v = get(name);
    if (v.empty()) return fallback;
    try {
      size_t used = 0;
      double d = std::stod(v, &used);
      KEEL_CHECK(used == v.size(), "");
      return d;
    } catch (const std::exception&) {
      KEEL_FAIL("option --", name, " expects a number, got '", v, "'");
    }
  }
};

Args parse_args(int argc, char** argv, int first, const std::vector<std::string>& known) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) == 0) {
      std::string name = s.substr(2);
      std::string value;
      auto eq = name.find('=');
      if (eq != std::string::npos && name != "set") {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      } else {
        KEEL_CHECK(i + 1 < argc, "option --", name, " needs a value");
        value = argv[++i];
      }
      bool ok = false;
      for (const auto& k : known) ok = ok || k == name;
      KEEL_CHECK(ok, "unknown option --", name);
      a.options.emplace(name, value);
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

int cmd_prepare(const Args& a) {
  KEEL_CHECK(!a.positional.empty(), "prepare: no input text files given");
  std::string out = a.get("out");
  KEEL_CHECK(!out.empty(), "prepare: --out DIR is required");
  auto tok = make_tokenizer(a.get("tokenizer", "gpt2"), a.get("assets", default_assets_dir()));
  PrepareSummary s = prepare_shards(a.positional, *tok, out, a.number("val-fraction", 0.01),
                                    int64_t(a.number("shard-tokens", 100e6)));
  std::cout << "prepared " << s.documents << " documents (" << s.bytes << " bytes) with "
            << tok->id() << ": " << s.train_tokens << " train tokens in " << s.train_files.size()
            << " shard(s), " << s.val_tokens << " validation tokens"
            << (s.val_file.empty() ? "" : " in " + s.val_file) << "\n";
  return 0;
}

int cmd_train(const Args& a) {
  KEEL_CHECK(a.positional.size() == 1, "train: expected one CONFIG file");
  config::Config cfg = trainer::load_config(a.positional[0], a.all("set"));
  recipes::validate_config(cfg);
  // The process grid (collective; refuses a world size that does not match).
  auto world = parallel::mpi_world();
  const auto& p = cfg.parallel();
  parallel::ParallelContext ctx(
      *world, parallel::MeshShape{int(p.dp()), int(p.cp()), int(p.ep()), int(p.tp())},
      trainer::training_device(cfg.train().device()));
  recipes::Recipe r = recipes::make_recipe(cfg, ctx);
  if (ctx.lead())
    std::cout << "model: " << recipes::family_of(cfg).name << ", " << r.module->num_parameters()
              << " parameters" << (ctx.size() > 1 ? ", " + ctx.shape().str() : "") << "\n";
  trainer::TrainOptions opt;
  opt.resume = a.get("resume");
  opt.stop_after = int64_t(a.number("stop-after", -1));
  trainer::TrainResult res = trainer::train(cfg, r, ctx, opt);
  if (ctx.lead() && !res.losses.empty())
    std::cout << "trained steps " << res.start_step + 1 << ".." << res.end_step << ": loss "
              << res.losses.front() << " -> " << res.losses.back() << "\n";
  return 0;
}

// A checkpoint's config, model and weights, in one process on `device`.
struct Loaded {
  config::Config cfg;
  std::unique_ptr<parallel::ParallelContext> ctx;
  recipes::Recipe recipe;
  std::string path;
};

Loaded load_model(const std::string& where, const std::vector<std::string>& sets,
                  bool on_train_device) {
  Loaded l;
  l.path = trainer::resolve_checkpoint(where);
  l.cfg = trainer::checkpoint_config(l.path);
  for (const auto& s : sets) trainer::apply_override(l.cfg, s);
  Device device = Device::cpu();
  if (on_train_device) {
    try {
      device = trainer::training_device(l.cfg.train().device());
    } catch (const Error& e) {
      // Name where the device came from and the way out.
      throw Error(std::string(e.what()) + " (train.device of " + l.path +
                  "; --set train.device=cpu evaluates it on the CPU)");
    }
  }
  // One process, whatever layout wrote the checkpoint: it holds full tensors.
  l.cfg.mutable_parallel()->Clear();
  l.ctx = std::make_unique<parallel::ParallelContext>(device);
  try {
    l.recipe = recipes::make_recipe(l.cfg, *l.ctx);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (the config stored in " + l.path + ")");
  }
  trainer::CheckpointData ck;
  ck.model = l.recipe.module->state_dict();
  trainer::load_checkpoint(l.path, ck);
  l.recipe.module->to(device);
  l.recipe.module->eval();
  return l;
}

int cmd_generate(const Args& a) {
  KEEL_CHECK(a.positional.size() == 1, "generate: expected one CHECKPOINT (file or directory)");
  Loaded l = load_model(a.positional[0], {}, false);
  KEEL_CHECK(bool(l.recipe.sample), "generate: the ", recipes::family_of(l.cfg).name,
             " family has no sampler");
  auto tok = make_tokenizer(l.cfg.data().tokenizer(), trainer::assets_dir(l.cfg));
  recipes::SampleOptions o;
  o.max_new_tokens = int64_t(a.number("tokens", 200));
  o.temperature = a.number("temperature", 0.8);
  o.top_k = int64_t(a.number("top-k", 40));
  o.seed = uint64_t(a.number("seed", 0));
  if (tok->eot_id()) o.stop_token = *tok->eot_id();
  std::string prompt = a.get("prompt", "\n");
  std::vector<int32_t> ids = l.recipe.sample(tok->encode(prompt), o);
  std::cout << "--- sample from " << l.path << " ---\n" << tok->decode(ids) << "\n";
  return 0;
}

int cmd_eval(const Args& a) {
  KEEL_CHECK(a.positional.size() == 1, "eval: expected one CHECKPOINT (file or directory)");
  Loaded l = load_model(a.positional[0], a.all("set"), true);
  int64_t batches = int64_t(a.number("batches", double(l.cfg.train().eval_batches())));
  double loss = trainer::evaluate(l.cfg, l.recipe, *l.ctx, batches);
  std::cout << "val loss " << std::setprecision(6) << loss << " over " << batches << " batches ("
            << l.path << ")\n";
  return 0;
}

int cmd_inspect(const Args& a) {
  KEEL_CHECK(a.positional.size() == 1, "inspect: expected one CHECKPOINT");
  int64_t params = 0;
  for (const auto& t : trainer::list_checkpoint(a.positional[0])) {
    if (t.kind == trainer::TensorInfo::Kind::kTensor) {
      std::cout << std::left << std::setw(48) << t.name << " " << dtype_name(t.dtype) << " "
                << shape_str(t.shape) << "\n";
      if (t.name.rfind("/model/", 0) == 0) params += shape_numel(t.shape);
    } else {
      std::cout << std::left << std::setw(48) << t.name << " ";
      if (t.value.find('\n') != std::string::npos)
        std::cout << "(" << t.value.size() << " bytes of text)\n";
      else
        std::cout << t.value << "\n";
    }
  }
  std::cout << "model parameters: " << params << "\n";
  // The family and its section, from the run's config.
  const config::Config cfg = trainer::checkpoint_config(a.positional[0]);
  std::cout << "family: " << recipes::family_of(cfg).name << "\n";
  return 0;
}

int cmd_mqar(const Args& a) {
  KEEL_CHECK(a.positional.empty(), "mqar: unexpected argument '",
             a.positional.empty() ? "" : a.positional[0], "' (give --grid FILE --out DIR)");
  const std::string grid_path = a.get("grid"), out = a.get("out");
  KEEL_CHECK(!grid_path.empty(), "mqar: --grid FILE is required");
  KEEL_CHECK(!out.empty(), "mqar: --out DIR is required");
  config::MqarGrid grid = recipes::mqar::load_grid(grid_path);
  for (const std::string& s : a.all("set")) grid.add_set(s);  // after the grid's own
  auto world = parallel::mpi_world();
  const auto results = recipes::mqar::run_grid(
      grid, std::filesystem::path(grid_path).parent_path().string(), out, *world, std::cout);
  if (world->rank() == 0)
    std::cout << "\nbest validation accuracy per cell (" << out << "/table.md, "
              << out << "/results.jsonl; plot: scripts/mqar_plot.py " << out << "):\n\n"
              << recipes::mqar::results_table(grid, results);
  return 0;
}

int run(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "prepare")
    return cmd_prepare(
        parse_args(argc, argv, 2, {"tokenizer", "out", "val-fraction", "shard-tokens", "assets"}));
  if (cmd == "train") return cmd_train(parse_args(argc, argv, 2, {"set", "resume", "stop-after"}));
  if (cmd == "generate")
    return cmd_generate(
        parse_args(argc, argv, 2, {"prompt", "tokens", "temperature", "top-k", "seed"}));
  if (cmd == "eval") return cmd_eval(parse_args(argc, argv, 2, {"batches", "set"}));
  if (cmd == "inspect") return cmd_inspect(parse_args(argc, argv, 2, {}));
  if (cmd == "mqar") return cmd_mqar(parse_args(argc, argv, 2, {"grid", "out", "set"}));
  std::cerr << "keel: unknown command '" << cmd << "'\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  keel::parallel::init_mpi(&argc, &argv);  // MPI_THREAD_FUNNELED, and the error rank
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // Under mpirun every message says which rank failed.
  const std::string who = size > 1 ? " on rank " + std::to_string(rank) : "";
  int code = 0;
  // One write per message, so ranks failing together do not interleave.
  auto report = [](const std::string& line) { std::cerr << line << std::flush; };
  try {
    code = run(argc, argv);
  } catch (const keel::Error& e) {
    report("keel: error" + who + ": " + e.what() + "\n");
    code = 1;
  } catch (const std::exception& e) {
    report("keel: internal error" + who + ": " + e.what() + "\n");
    code = 3;
  }
  // One failing rank must not leave the others waiting in a collective:
  // MPI_Abort ends every rank of the job (mpirun exits non-zero).
  if (code != 0 && size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  keel::parallel::finalize_mpi();
  return code;
}
