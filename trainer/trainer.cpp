#include "trainer/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "autograd/autocast.h"
#include "parallel/data_parallel.h"
#include "parallel/zero.h"
#include "trainer/checkpoint.h"
#include "trainer/metrics.h"
#include "trainer/optim.h"
#include "trainer/shard.h"

namespace keel::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// One micro-step of the global batch; this rank's rows of it.
TokenLoaderOptions loader_options(const config::Config& cfg, parallel::Communicator* dp) {
  TokenLoaderOptions o;
  o.batch = cfg.data().batch_size() / cfg.train().grad_accum();
  o.seq_len = cfg.data().seq_len();
  o.world = dp ? dp->size() : 1;
  o.rank = dp ? dp->rank() : 0;
  o.dtype = DType::I64;
  return o;
}

// The mean of a per-rank value over the group (the value itself without
// one); the same double on every rank.
double mean_across(parallel::Communicator* dp, double x) {
  return dp ? parallel::sum_across(*dp, x) / double(dp->size()) : x;
}

int64_t meta_value(const std::vector<std::pair<std::string, int64_t>>& meta, const char* key) {
  for (const auto& [n, v] : meta)
    if (n == key) return v;
  KEEL_ASSERT(false, key);
  return 0;
}

std::vector<std::string> files(const google::protobuf::RepeatedPtrField<std::string>& list) {
  return {list.begin(), list.end()};
}

void check_data(const config::Config& cfg, const TokenLoader& loader, const char* which) {
  KEEL_CHECK(loader.tokenizer_id() == cfg.data().tokenizer(), "data.", which, ": shards were made",
             " with tokenizer '", loader.tokenizer_id(), "' but data.tokenizer is '",
             cfg.data().tokenizer(), "'");
}

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

// How many ranks the launcher put on this node (0: unknown).
int local_size_from_env() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "LOCAL_WORLD_SIZE"}) {
    const char* v = std::getenv(var);
    if (v && *v) return std::max(0, std::atoi(v));
  }
  return 0;
}

// The loader's host batch on the model's device (itself on the host).
TokenBatch to_device(TokenBatch b, Device d) {
  b.inputs = b.inputs.to(d);
  b.targets = b.targets.to(d);
  return b;
}

}  // namespace

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
  return parse_config(meta.meta_text[0].second, path + ":/meta/config");
}

double evaluate(const config::Config& cfg, nn::Module& model, const LossFn& loss_fn,
                int64_t batches, parallel::Communicator* dp) {
  KEEL_CHECK(cfg.data().val_files_size() > 0, "evaluate: data.val_files is empty");
  TokenLoader val(files(cfg.data().val_files()), loader_options(cfg, dp));
  check_data(cfg, val, "val_files");
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  AutocastGuard precision(compute_dtype(cfg));
  const Device device = model.device();
  double total = 0;
  for (int64_t i = 0; i < batches; ++i) {
    TokenBatch b = to_device(val.next(), device);
    total += loss_fn(b.inputs, b.targets).item();
  }
  model.train(was_training);
  return mean_across(dp, total / double(batches));
}

TrainResult train(const config::Config& cfg, nn::Module& model, const LossFn& loss_fn,
                  const TrainOptions& opt) {
  validate_config(cfg);
  parallel::Communicator* dp = opt.dp;
  const int dp_size = dp ? dp->size() : 1;
  const int dp_rank = dp ? dp->rank() : 0;
  KEEL_CHECK(
      cfg.parallel().dp() == dp_size, "parallel.dp is ", cfg.parallel().dp(), " but ",
      dp ? detail::cat("the data-parallel communicator '", dp->name(), "' has ", dp_size, " ranks")
         : std::string("train() runs as a single process (no dp communicator)"),
      "; launch N ranks (mpirun -np N) with --set parallel.dp=N");
  const bool lead = dp_rank == 0;  // prints, writes metrics, renames checkpoints
  std::ostream discard(nullptr);
  std::ostream& out = !lead ? discard : (opt.out ? *opt.out : std::cout);
  const auto& tc = cfg.train();
  if (tc.threads() > 0) omp_set_num_threads(int(tc.threads()));

  TokenLoader loader(files(cfg.data().train_files()), loader_options(cfg, dp));
  check_data(cfg, loader, "train_files");
  const Device device = training_device(tc.device());
  model.to(device);  // before the optimizer allocates its moments beside the weights
  const DType compute = compute_dtype(cfg);
  const bool fp16 = compute == DType::F16;
  // fp16 scales the loss as configured; fp32 and bf16 through a fixed scale
  // of 1, which multiplies by 1 and never skips a step.
  LossScaler scaler({fp16 ? tc.loss_scale() : 1.0, tc.initial_loss_scale(),
                     tc.loss_scale_window(), tc.min_loss_scale()});
  const auto& oc = cfg.optim();
  const nn::NamedTensors params = model.named_parameters();
  const std::vector<std::string> decayed = model.decayed_parameter_names();
  // Single process: AdamW. Data parallel: gradients averaged by GradientSync,
  // then AdamW on every rank, or (ZeRO-1) reduce-scattered into ShardedAdamW.
  const bool zero = dp && cfg.parallel().zero_stage() == 1;
  // Gradients are reduced where they live: over MPI on the host, over NCCL
  // (built from the dp group) on GPUs. Scalars, strings and checkpoints
  // stay on the MPI group.
  std::unique_ptr<parallel::Communicator> nccl;
  if (dp && device.is_cuda()) nccl = parallel::make_nccl_communicator(*dp, device.index);
  std::unique_ptr<parallel::GradientSync> sync;
  std::unique_ptr<AdamW> adamw;
  std::unique_ptr<parallel::ShardedAdamW> sharded;
  if (dp) {
    parallel::GradientSyncOptions so;
    so.bucket_mb = cfg.parallel().bucket_mb();
    KEEL_CHECK(so.bucket_mb > 0, "parallel.bucket_mb must be positive, got ", so.bucket_mb);
    so.reduction =
        zero ? parallel::GradReduction::ReduceScatter : parallel::GradReduction::AllReduce;
    sync = std::make_unique<parallel::GradientSync>(params, nccl ? *nccl : *dp, so);
  }
  if (zero) {
    sharded = std::make_unique<parallel::ShardedAdamW>(
        *sync, decayed,
        parallel::ShardedAdamWConfig{oc.beta1(), oc.beta2(), oc.eps(), oc.weight_decay()});
  } else {
    adamw = std::make_unique<AdamW>(
        params, decayed, AdamWConfig{oc.lr(), oc.beta1(), oc.beta2(), oc.eps(), oc.weight_decay()});
  }
  auto steps_taken = [&] { return zero ? sharded->steps_taken() : adamw->steps_taken(); };
  LrSchedule schedule{oc.lr(), cfg.schedule().warmup_steps(), tc.steps(), cfg.schedule().decay(),
                      cfg.schedule().min_lr_ratio()};
  manual_seed(tc.seed());

  // Collective checkpoints: every tensor by its full logical shape. Saving,
  // replicated tensors are split evenly between the ranks; loading, each
  // rank reads them whole. ZeRO moments are the ranges this rank's shard
  // holds, under the same names ("<param>/m", "<param>/v") as AdamW's.
  auto model_parts = [&](bool saving) {
    NamedParts parts;
    for (const auto& [name, t] : model.state_dict())
      parts.emplace_back(name, saving ? replicated_part(t, dp_rank, dp_size) : whole_part(t));
    return parts;
  };
  auto optim_parts = [&](bool saving) {
    NamedParts parts;
    if (zero) {
      for (const auto& piece : sharded->pieces()) {
        const auto& [name, p] = params[piece.param];
        parts.emplace_back(name + "/m",
                           range_part(p.sizes(), DType::F32, piece.begin, piece.end, piece.m));
        parts.emplace_back(name + "/v",
                           range_part(p.sizes(), DType::F32, piece.begin, piece.end, piece.v));
      }
    } else {
      for (const auto& [name, t] : adamw->state())
        parts.emplace_back(name, saving ? replicated_part(t, dp_rank, dp_size) : whole_part(t));
    }
    return parts;
  };

  TrainResult result;
  const std::string ckpt_dir = cfg.checkpoint().dir();
  if (!opt.resume.empty()) {
    std::string path = opt.resume;
    if (opt.resume == "auto") {
      // One answer for the group: rank 0 looks.
      path = lead ? latest_checkpoint(ckpt_dir) : "";
      if (dp) parallel::broadcast_string(*dp, path, 0);
    }
    if (path.empty()) {
      out << "resume: no checkpoint in " << ckpt_dir << ", starting from scratch\n";
    } else {
      // The loss scaler's state continues an fp16 run only. An fp16 run
      // resumed from an fp32 or bf16 checkpoint (whose saved scale is 1) or
      // from one written before loss scaling existed starts at
      // train.initial_loss_scale instead.
      const bool resume_scaler = fp16 && checkpoint_config(path).train().precision() == "fp16";
      std::vector<std::pair<std::string, int64_t>> meta = {{"rng_seed", 0},   {"rng_offset", 0},
                                                           {"data_shard", 0}, {"data_offset", 0},
                                                           {"data_epoch", 0}, {"optim_steps", 0}};
      std::vector<std::pair<std::string, double>> meta_float;
      if (resume_scaler) {
        meta.emplace_back("loss_scale_clean_steps", 0);
        meta_float.emplace_back("loss_scale", 0.0);
      }
      int64_t step = 0;
      if (dp) {
        CheckpointParts ck;
        ck.model = model_parts(false);
        ck.optim = optim_parts(false);
        ck.meta_int = meta;
        ck.meta_float = meta_float;
        load_checkpoint(path, ck, *dp);
        meta = ck.meta_int;
        meta_float = ck.meta_float;
        step = ck.step;
      } else {
        CheckpointData ck;
        ck.model = model.state_dict();
        ck.optim = adamw->state();
        ck.meta_int = meta;
        ck.meta_float = meta_float;
        load_checkpoint(path, ck);
        meta = ck.meta_int;
        meta_float = ck.meta_float;
        step = ck.step;
      }
      default_generator().set_state(uint64_t(meta_value(meta, "rng_seed")),
                                    uint64_t(meta_value(meta, "rng_offset")));
      loader.set_position({meta_value(meta, "data_shard"), meta_value(meta, "data_offset"),
                           meta_value(meta, "data_epoch")});
      if (resume_scaler)
        scaler.set_state(meta_float.at(0).second, meta_value(meta, "loss_scale_clean_steps"));
      if (zero)
        sharded->set_steps_taken(meta_value(meta, "optim_steps"));
      else
        adamw->set_steps_taken(meta_value(meta, "optim_steps"));
      result.start_step = step;
      out << "resumed from " << path << " at step " << step << "\n";
    }
  }

  std::unique_ptr<JsonlWriter> jsonl;
  std::unique_ptr<TensorBoardWriter> tb;
  if (lead) {
    if (cfg.logging().jsonl() || cfg.logging().tensorboard())
      fs::create_directories(cfg.logging().dir());
    if (cfg.logging().jsonl())
      jsonl = std::make_unique<JsonlWriter>(cfg.logging().dir() + "/metrics.jsonl");
    if (cfg.logging().tensorboard()) tb = std::make_unique<TensorBoardWriter>(cfg.logging().dir());
  }

  const std::string config_text = config_to_text(cfg);
  auto save = [&](int64_t step) {
    if (lead) fs::create_directories(ckpt_dir);
    if (dp) dp->barrier();  // the directory exists before any rank opens the file
    LoaderPosition pos = loader.position();
    const std::vector<std::pair<std::string, std::string>> meta_text = {
        {"config", config_text}, {"tokenizer", cfg.data().tokenizer()}};
    const std::vector<std::pair<std::string, int64_t>> meta_int = {
        {"rng_seed", int64_t(default_generator().seed())},
        {"rng_offset", int64_t(default_generator().offset())},
        {"data_shard", pos.shard},
        {"data_offset", pos.offset},
        {"data_epoch", pos.epoch},
        {"optim_steps", steps_taken()},
        {"loss_scale_clean_steps", scaler.clean_steps()}};
    const std::vector<std::pair<std::string, double>> meta_float = {
        {"loss_scale", scaler.scale()}};
    std::string path = checkpoint_path(ckpt_dir, step);
    if (dp) {
      CheckpointParts ck;
      ck.step = step;
      ck.model = model_parts(true);
      ck.optim = optim_parts(true);
      ck.meta_text = meta_text;
      ck.meta_int = meta_int;
      ck.meta_float = meta_float;
      save_checkpoint(path, ck, *dp);
    } else {
      CheckpointData ck;
      ck.step = step;
      ck.model = model.state_dict();
      ck.optim = adamw->state();
      ck.meta_text = meta_text;
      ck.meta_int = meta_int;
      ck.meta_float = meta_float;
      save_checkpoint(path, ck);
    }
    if (lead) prune_checkpoints(ckpt_dir, cfg.checkpoint().keep_last());
    result.last_checkpoint = path;
    out << "saved checkpoint " << path << "\n";
  };

  const int64_t total = tc.steps();
  const int64_t accum = tc.grad_accum();
  const int64_t tokens_per_step = cfg.data().batch_size() * cfg.data().seq_len();
  const int64_t end = opt.stop_after >= 0 ? std::min(total, opt.stop_after) : total;
  model.train();
  auto interval_start = Clock::now();
  const auto run_start = Clock::now();
  int64_t interval_steps = 0;
  int64_t step = result.start_step;
  // This rank's rows are shard dp_rank of the serial batch: dropout draws
  // the serial run's mask for them, so dp runs match serial ones.
  DropoutShardGuard dropout_shard(dp_rank, dp_size);
  for (; step < end; ++step) {
    const double lr = schedule.at(step);
    // The loss is scaled up for backward and the gradients scaled back down
    // in the optimizer step (and in the norm); 1 but in fp16.
    const double loss_scale = scaler.scale();
    double loss_sum = 0;
    for (int64_t micro = 0; micro < accum; ++micro) {
      TokenBatch b = to_device(loader.next(), device);
      // Gradients are reduced during the last micro-step's backward only.
      if (sync) sync->set_sync(micro == accum - 1);
      Tensor loss;
      {
        AutocastGuard precision(compute);
        loss = loss_fn(b.inputs, b.targets);
      }
      KEEL_CHECK(loss.dtype() == DType::F32, "the loss function returned ", loss.describe(),
                 "; it must return an f32 scalar at every train.precision");
      loss_sum += loss.item();
      const double factor = loss_scale / double(accum);
      (factor != 1.0 ? mul_scalar(loss, factor) : loss).backward();
    }
    if (sync) sync->finish();
    const double loss = mean_across(dp, loss_sum / double(accum));
    KEEL_CHECK(std::isfinite(loss), "training diverged: loss is ", loss, " at step ", step + 1);
    // Plain data parallel: every rank holds the averaged gradients, so the
    // local norm is the global one. ZeRO: shard norms summed across ranks.
    const double scaled_norm = zero ? sharded->grad_norm() : global_grad_norm(params);
    const double norm = scaled_norm / loss_scale;
    // Every rank sees the same norm, so all skip or all step.
    const bool step_ok = scaler.update(std::isfinite(scaled_norm));
    if (step_ok) {
      const double clip = clip_coefficient(norm, oc.grad_clip()) / loss_scale;
      if (zero)
        sharded->step(lr, clip);
      else
        adamw->step(lr, clip);
    } else {
      ++result.skipped_steps;
      // Scales are powers of two times the initial one: print them whole.
      auto whole = [](double x) {
        return x == std::floor(x) && x < 1e15 ? std::to_string(int64_t(x)) : std::to_string(x);
      };
      out << "step " << step + 1 << ": gradients overflowed at loss scale " << whole(loss_scale)
          << "; step skipped, loss scale now " << whole(scaler.scale()) << std::endl;
    }
    model.zero_grad();
    result.losses.push_back(loss);
    ++interval_steps;

    const int64_t done = step + 1;
    if (done % tc.log_every() == 0 || done == end) {
      double secs = std::chrono::duration<double>(Clock::now() - interval_start).count();
      double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
      double tok_s = double(interval_steps * tokens_per_step) / std::max(secs, 1e-9);
      ProgressInfo p;
      p.step = done;
      p.total_steps = total;
      p.loss = loss;
      p.lr = lr;
      p.grad_norm = norm;
      p.tokens_per_sec = tok_s;
      p.eta_seconds = elapsed / double(done - result.start_step) * double(total - done);
      out << format_progress(p) << std::endl;
      if (jsonl) {
        JsonFields rec = {
            {"step", done}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
            {"tokens_per_sec", tok_s}};
        if (fp16) rec.emplace_back("loss_scale", scaler.scale());
        jsonl->write(rec);
      }
      if (tb) {
        tb->add_scalar("train/loss", loss, done);
        tb->add_scalar("train/lr", lr, done);
        tb->add_scalar("train/grad_norm", norm, done);
        tb->add_scalar("train/tokens_per_sec", tok_s, done);
        if (fp16) tb->add_scalar("train/loss_scale", scaler.scale(), done);
        tb->flush();
      }
      interval_start = Clock::now();
      interval_steps = 0;
    }
    if (tc.eval_every() > 0 && cfg.data().val_files_size() > 0 &&
        (done % tc.eval_every() == 0 || done == total)) {
      double val = evaluate(cfg, model, loss_fn, tc.eval_batches(), dp);
      result.val_losses.emplace_back(done, val);
      out << "step " << done << " | val loss " << val << std::endl;
      if (jsonl) jsonl->write({{"step", done}, {"val_loss", val}});
      if (tb) {
        tb->add_scalar("val/loss", val, done);
        tb->flush();
      }
    }
    const int64_t every = cfg.checkpoint().every();
    if ((every > 0 && done % every == 0) || done == end) save(done);
  }
  result.end_step = step;
  return result;
}

}  // namespace keel::trainer
