#include "trainer/trainer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "autograd/autocast.h"
#include "parallel/data_parallel.h"
#include "trainer/checkpoint.h"
#include "trainer/metrics.h"
#include "trainer/optim.h"
#include "trainer/optimizer.h"
#include "trainer/run_state.h"

namespace keel::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
using parallel::Axis;

// The node-local rank the launcher gives this process (0 without one).
int local_rank_from_env() {
  for (const char* var :
       {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "LOCAL_RANK"}) {
    const char* v = std::getenv(var);
    if (v && *v) {
      char* end = nullptr;
      const long r = std::strtol(v, &end, 10);
      KEEL_CHECK(end && *end == '\0' && r >= 0, "environment variable ", var, "='", v,
                 "' is not a node-local rank");
      return int(r);
    }
  }
  return 0;
}

// The ranks whose losses differ (they see other tokens); tp ranks agree.
parallel::Communicator& loss_group(parallel::ParallelContext& ctx) {
  return ctx.host({Axis::DP, Axis::CP, Axis::EP});
}

// The mean over the loss group of a per-rank value; the same double on every rank.
double mean_across(parallel::ParallelContext& ctx, double x) {
  parallel::Communicator& g = loss_group(ctx);
  return g.size() > 1 ? parallel::sum_across(g, x) / double(g.size()) : x;
}

// Per-step sums of named metrics, in first-seen order.
void add_metrics(Metrics& sum, const Metrics& m) {
  for (const auto& [name, v] : m) {
    auto it = std::find_if(sum.begin(), sum.end(), [&](const auto& e) { return e.first == name; });
    if (it == sum.end())
      sum.emplace_back(name, v);
    else
      it->second += v;
  }
}

// Whether the validation metrics reach train.stop_at in train.stop_metric;
// a metric the loss does not report is a keel::Error naming those it does.
bool reached_stop(const config::Train& tc, const Metrics& metrics) {
  if (!tc.has_stop_metric()) return false;
  std::string known;
  for (const auto& [name, v] : metrics) {
    if (name == tc.stop_metric()) return v >= tc.stop_at();
    known += (known.empty() ? "" : ", ") + name;
  }
  KEEL_FAIL("config: train.stop_metric '", tc.stop_metric(),
            "' is not a validation metric of this loss (it reports: ",
            known.empty() ? "none" : known, ")");
}

// One micro-batch's forward at the compute precision; the loss must be f32.
LossOutput forward(const Workload& work, const Batch& batch, DType compute) {
  AutocastGuard precision(compute);
  LossOutput out = work.loss(batch);
  KEEL_CHECK(out.loss.dtype() == DType::F32, "the loss function returned ", out.loss.describe(),
             "; it must return an f32 scalar at every train.precision");
  return out;
}

// Progress lines, JSONL and TensorBoard, written by the lead rank only.
class RunLog {
 public:
  RunLog(const config::Config& cfg, bool lead, std::ostream* out)
      : discard_(nullptr), out_(!lead ? discard_ : (out ? *out : std::cout)) {
    const auto& l = cfg.logging();
    if (!lead) return;
    if (l.jsonl() || l.tensorboard()) fs::create_directories(l.dir());
    if (l.jsonl()) jsonl_ = std::make_unique<JsonlWriter>(l.dir() + "/metrics.jsonl");
    if (l.tensorboard()) tb_ = std::make_unique<TensorBoardWriter>(l.dir());
  }
  std::ostream& out() { return out_; }

  // `extra`: the step's metrics and (fp16) the loss scale, after the fixed fields.
  void train(const ProgressInfo& p, double grad_norm, const Metrics& extra) {
    out_ << format_progress(p) << std::endl;
    Metrics scalars = {{"loss", p.loss},
                       {"lr", p.lr},
                       {"grad_norm", grad_norm},
                       {"tokens_per_sec", p.tokens_per_sec}};
    scalars.insert(scalars.end(), extra.begin(), extra.end());
    if (jsonl_) {
      JsonFields rec = {{"step", p.step}};
      for (const auto& [name, v] : scalars) rec.emplace_back(name, v);
      jsonl_->write(rec);
    }
    if (tb_) {
      for (const auto& [name, v] : scalars) tb_->add_scalar("train/" + name, v, p.step);
      tb_->flush();
    }
  }
  void val(int64_t step, double loss, const Metrics& metrics) {
    out_ << "step " << step << " | val loss " << loss;
    for (const auto& [name, v] : metrics) out_ << " | val " << name << " " << v;
    out_ << std::endl;
    if (jsonl_) {
      JsonFields rec = {{"step", step}, {"val_loss", loss}};
      for (const auto& [name, v] : metrics) rec.emplace_back("val_" + name, v);
      jsonl_->write(rec);
    }
    if (tb_) {
      tb_->add_scalar("val/loss", loss, step);
      for (const auto& [name, v] : metrics) tb_->add_scalar("val/" + name, v, step);
      tb_->flush();
    }
  }
  void skipped(int64_t step, double old_scale, double new_scale) {
    // Scales are powers of two times the initial one: print them whole.
    auto whole = [](double x) {
      return x == std::floor(x) && x < 1e15 ? std::to_string(int64_t(x)) : std::to_string(x);
    };
    out_ << "step " << step << ": gradients overflowed at loss scale " << whole(old_scale)
         << "; step skipped, loss scale now " << whole(new_scale) << std::endl;
  }

 private:
  std::ostream discard_;
  std::ostream& out_;
  std::unique_ptr<JsonlWriter> jsonl_;
  std::unique_ptr<TensorBoardWriter> tb_;
};

// The checkpoint to resume from ("" for none): `resume` itself, or for
// "auto" the latest in `dir` as the lead rank sees it.
std::string resume_path(const std::string& resume, const std::string& dir,
                        parallel::ParallelContext& ctx) {
  if (resume != "auto") return resume;
  std::string path = ctx.lead() ? latest_checkpoint(dir) : "";
  parallel::broadcast_string(ctx.world(), path, 0);
  return path;
}

void check_layout(const config::Config& cfg, parallel::ParallelContext& ctx) {
  const auto& p = cfg.parallel();
  const std::pair<int64_t, int> axes[] = {{p.dp(), ctx.shape().dp},
                                          {p.cp(), ctx.shape().cp},
                                          {p.ep(), ctx.shape().ep},
                                          {p.tp(), ctx.shape().tp}};
  const char* names[] = {"dp", "cp", "ep", "tp"};
  for (int i = 0; i < 4; ++i)
    KEEL_CHECK(axes[i].first == axes[i].second, "parallel.", names[i], " is ", axes[i].first,
               " but this run's process grid is ", ctx.shape().str(), " (", ctx.size(),
               " ranks); launch dp*cp*ep*tp ranks (mpirun -np N) with matching --set parallel.*");
}

}  // namespace

int local_size_from_env() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "LOCAL_WORLD_SIZE"}) {
    const char* v = std::getenv(var);
    if (v && *v) return std::max(0, std::atoi(v));
  }
  return 0;
}

Device training_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  // Checked here too, not only by validate_config: keel eval's --set reaches
  // this directly, and "cuda:x" must not read as cuda:0.
  const std::string digits = name.rfind("cuda:", 0) == 0 ? name.substr(5) : "";
  KEEL_CHECK(name == "cuda" || (!digits.empty() && digits.size() <= 4 &&
                                digits.find_first_not_of("0123456789") == std::string::npos),
             "train.device '", name, "' is not cpu, cuda or cuda:N");
#ifndef KEEL_WITH_CUDA
  KEEL_FAIL("train.device is '", name, "' but this keel was built without CUDA ",
            "(configure with -DKEEL_CUDA=ON on a machine with the CUDA toolkit)");
#endif
  const int count = cuda_device_count();
  KEEL_CHECK(count > 0, "train.device is '", name, "' but no CUDA device is visible",
             " (check nvidia-smi and CUDA_VISIBLE_DEVICES)");
  int index = 0;
  if (name == "cuda") {
    // Two ranks on one GPU would fail later inside NCCL ("duplicate GPU").
    const int local = local_size_from_env();
    KEEL_CHECK(local <= count, "train.device is 'cuda' with ", local,
               " ranks on this node but only ", count,
               " CUDA device(s) visible; start at most one rank per GPU");
    index = local_rank_from_env() % count;
  } else {
    index = std::atoi(name.c_str() + 5);
    KEEL_CHECK(index < count, "train.device is '", name, "' but only ", count,
               " CUDA device(s) are visible (cuda:0..cuda:", count - 1, ")");
  }
  return Device::cuda(index);
}

DType compute_dtype(const config::Config& cfg) {
  const std::string& p = cfg.train().precision();
  if (p == "bf16") return DType::BF16;
  if (p == "fp16") return DType::F16;
  KEEL_CHECK(p == "fp32", "train.precision '", p, "' is not fp32, bf16 or fp16");
  return DType::F32;
}

std::string resolve_checkpoint(const std::string& path) {
  if (fs::is_directory(path)) {
    std::string latest = latest_checkpoint(path);
    KEEL_CHECK(!latest.empty(), "no complete checkpoint in directory '", path, "'");
    return latest;
  }
  return path;
}

config::Config checkpoint_config(const std::string& path) {
  CheckpointData meta;
  meta.meta_text = {{"config", ""}};
  load_checkpoint(path, meta);
  return parse_checkpoint_config(meta.meta_text[0].second, path + ":/meta/config");
}

EvalResult evaluate_with_metrics(const config::Config& cfg, const Workload& work,
                                 parallel::ParallelContext& ctx, int64_t batches) {
  KEEL_CHECK(work.has_val(), "evaluate: the config names no validation data",
             " (token shards: data.shards.val_files, e.g. --set data.shards.val_files=val.bin)");
  std::unique_ptr<DataSource> val = work.data(Split::Val);
  nn::Module& model = *work.module;
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  const DType compute = compute_dtype(cfg);
  const Device device = model.device();
  double total = 0;
  Metrics sums;
  for (int64_t i = 0; i < batches; ++i) {
    LossOutput out = forward(work, val->next().to(device), compute);
    total += out.loss.item();
    add_metrics(sums, out.metrics);
  }
  model.train(was_training);
  EvalResult r;
  r.loss = mean_across(ctx, total / double(batches));
  for (const auto& [name, v] : sums)
    r.metrics.emplace_back(name, mean_across(ctx, v / double(batches)));
  return r;
}

double evaluate(const config::Config& cfg, const Workload& work, parallel::ParallelContext& ctx,
                int64_t batches) {
  return evaluate_with_metrics(cfg, work, ctx, batches).loss;
}

TrainResult train(const config::Config& cfg, const Workload& work, parallel::ParallelContext& ctx,
                  const TrainOptions& opt) {
  validate_config(cfg);
  check_layout(cfg, ctx);
  const auto& tc = cfg.train();
  if (tc.threads() > 0) omp_set_num_threads(int(tc.threads()));
  nn::Module& model = *work.module;
  std::unique_ptr<DataSource> data = work.data(Split::Train);
  model.to(ctx.device());  // before the optimizer allocates its moments beside the weights
  const DType compute = compute_dtype(cfg);
  // fp16 scales the loss as configured; fp32 and bf16 through a fixed scale
  // of 1, which multiplies by 1 and never skips a step.
  LossScaler scaler({compute == DType::F16 ? tc.loss_scale() : 1.0, tc.initial_loss_scale(),
                     tc.loss_scale_window(), tc.min_loss_scale()});
  std::unique_ptr<Optimizer> optimizer = make_optimizer(cfg, model, ctx);
  const auto& oc = cfg.optim();
  LrSchedule schedule{oc.lr(), cfg.schedule().warmup_steps(), tc.steps(), cfg.schedule().decay(),
                      cfg.schedule().min_lr_ratio()};
  ctx.seed(tc.seed());
  // Layers built without the context's streams draw from the process
  // default generator: it is seeded and checkpointed as well, so they too
  // resume exactly.
  manual_seed(tc.seed());
  RunState state{model, *optimizer, *data, scaler, ctx};
  RunLog log(cfg, ctx.lead(), opt.out);

  TrainResult result;
  const std::string ckpt_dir = cfg.checkpoint().dir();
  if (!opt.resume.empty()) {
    const std::string path = resume_path(opt.resume, ckpt_dir, ctx);
    if (path.empty()) {
      log.out() << "resume: no checkpoint in " << ckpt_dir << ", starting from scratch\n";
    } else {
      result.start_step = load_run(path, cfg, state);
      log.out() << "resumed from " << path << " at step " << result.start_step << "\n";
    }
  }
  auto save = [&](int64_t step) {
    if (ctx.lead()) fs::create_directories(ckpt_dir);
    ctx.world().barrier();  // the directory exists before any rank opens the file
    const std::string path = checkpoint_path(ckpt_dir, step);
    save_run(path, step, cfg, state);
    if (ctx.lead()) prune_checkpoints(ckpt_dir, cfg.checkpoint().keep_last());
    result.last_checkpoint = path;
    log.out() << "saved checkpoint " << path << "\n";
  };

  const int64_t total = tc.steps(), accum = tc.grad_accum();
  const int64_t end = opt.stop_after >= 0 ? std::min(total, opt.stop_after) : total;
  model.train();
  auto interval_start = Clock::now();
  const auto run_start = Clock::now();
  int64_t interval_steps = 0;
  int64_t step = result.start_step;
  // This rank's rows are shard data_rank of the serial batch: dropout draws
  // the serial run's mask for them, so parallel runs match serial ones.
  DropoutShardGuard dropout_shard(ctx.data_rank(), ctx.data_world());
  for (; step < end; ++step) {
    const double lr = schedule.at(step);
    // The loss is scaled up for backward and the gradients scaled back down
    // in the optimizer step (and in the norm); 1 but in fp16.
    const double loss_scale = scaler.scale();
    double loss_sum = 0;
    Metrics metric_sums;
    for (int64_t micro = 0; micro < accum; ++micro) {
      optimizer->begin_backward(micro == accum - 1);
      LossOutput out = forward(work, data->next().to(ctx.device()), compute);
      loss_sum += out.loss.item();
      add_metrics(metric_sums, out.metrics);
      const double factor = loss_scale / double(accum);
      (factor != 1.0 ? mul_scalar(out.loss, factor) : out.loss).backward();
    }
    optimizer->finish_backward();
    const double loss = mean_across(ctx, loss_sum / double(accum));
    KEEL_CHECK(std::isfinite(loss), "training diverged: loss is ", loss, " at step ", step + 1);
    const double scaled_norm = optimizer->grad_norm();
    const double norm = scaled_norm / loss_scale;
    // Every rank sees the same norm, so all skip or all step.
    if (scaler.update(std::isfinite(scaled_norm))) {
      optimizer->step(lr, clip_coefficient(norm, oc.grad_clip()) / loss_scale);
    } else {
      ++result.skipped_steps;
      log.skipped(step + 1, loss_scale, scaler.scale());
    }
    model.zero_grad();
    result.losses.push_back(loss);
    ++interval_steps;

    const int64_t done = step + 1;
    if (done % tc.log_every() == 0 || done == end) {
      const double secs = std::chrono::duration<double>(Clock::now() - interval_start).count();
      const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
      ProgressInfo p;
      p.step = done;
      p.total_steps = total;
      p.loss = loss;
      p.lr = lr;
      p.grad_norm = norm;
      p.tokens_per_sec =
          double(interval_steps * accum * data->tokens_per_batch()) / std::max(secs, 1e-9);
      p.eta_seconds = elapsed / double(done - result.start_step) * double(total - done);
      Metrics extra;
      for (const auto& [name, v] : metric_sums)
        extra.emplace_back(name, mean_across(ctx, v / double(accum)));
      if (compute == DType::F16) extra.emplace_back("loss_scale", scaler.scale());
      log.train(p, norm, extra);
      interval_start = Clock::now();
      interval_steps = 0;
    }
    if (tc.eval_every() > 0 && work.has_val() && (done % tc.eval_every() == 0 || done == total)) {
      const EvalResult val = evaluate_with_metrics(cfg, work, ctx, tc.eval_batches());
      result.val_losses.emplace_back(done, val.loss);
      if (!val.metrics.empty()) result.val_metrics.emplace_back(done, val.metrics);
      log.val(done, val.loss, val.metrics);
      result.stopped_early = reached_stop(tc, val.metrics);
    }
    const int64_t every = cfg.checkpoint().every();
    if (cfg.checkpoint().save() &&
        ((every > 0 && done % every == 0) || done == end || result.stopped_early))
      save(done);
    if (result.stopped_early) {
      log.out() << "stopped at step " << done << ": val " << tc.stop_metric() << " reached "
                << tc.stop_at() << "\n";
      ++step;
      break;
    }
  }
  result.end_step = step;
  return result;
}

}  // namespace keel::trainer
