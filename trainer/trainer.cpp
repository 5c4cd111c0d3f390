#include "trainer/trainer.h"

#include <omp.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "trainer/checkpoint.h"
#include "trainer/metrics.h"
#include "trainer/optim.h"
#include "trainer/shard.h"

namespace keel::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

TokenLoaderOptions loader_options(const config::Config& cfg) {
  TokenLoaderOptions o;
  o.batch = cfg.data().batch_size() / cfg.train().grad_accum();  // one micro-step, global
  o.seq_len = cfg.data().seq_len();
  o.dtype = DType::I64;
  return o;
}

std::vector<std::string> files(const google::protobuf::RepeatedPtrField<std::string>& list) {
  return {list.begin(), list.end()};
}

void check_data(const config::Config& cfg, const TokenLoader& loader, const char* which) {
  KEEL_CHECK(loader.tokenizer_id() == cfg.data().tokenizer(), "data.", which, ": shards were made",
             " with tokenizer '", loader.tokenizer_id(), "' but data.tokenizer is '",
             cfg.data().tokenizer(), "'");
}

}  // namespace

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
                int64_t batches) {
  KEEL_CHECK(cfg.data().val_files_size() > 0, "evaluate: data.val_files is empty");
  TokenLoader val(files(cfg.data().val_files()), loader_options(cfg));
  check_data(cfg, val, "val_files");
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  double total = 0;
  for (int64_t i = 0; i < batches; ++i) {
    TokenBatch b = val.next();
    total += loss_fn(b.inputs, b.targets).item();
  }
  model.train(was_training);
  return total / double(batches);
}

TrainResult train(const config::Config& cfg, nn::Module& model, const LossFn& loss_fn,
                  const TrainOptions& opt) {
  validate_config(cfg);
  std::ostream& out = opt.out ? *opt.out : std::cout;
  const auto& tc = cfg.train();
  if (tc.threads() > 0) omp_set_num_threads(int(tc.threads()));

  TokenLoader loader(files(cfg.data().train_files()), loader_options(cfg));
  check_data(cfg, loader, "train_files");
  const auto& oc = cfg.optim();
  AdamW optim(model.named_parameters(), model.decayed_parameter_names(),
              {oc.lr(), oc.beta1(), oc.beta2(), oc.eps(), oc.weight_decay()});
  LrSchedule schedule{oc.lr(), cfg.schedule().warmup_steps(), tc.steps(), cfg.schedule().decay(),
                      cfg.schedule().min_lr_ratio()};
  manual_seed(tc.seed());

  TrainResult result;
  const std::string ckpt_dir = cfg.checkpoint().dir();
  if (!opt.resume.empty()) {
    std::string path = opt.resume == "auto" ? latest_checkpoint(ckpt_dir) : opt.resume;
    if (path.empty()) {
      out << "resume: no checkpoint in " << ckpt_dir << ", starting from scratch\n";
    } else {
      CheckpointData ck;
      ck.model = model.state_dict();
      ck.optim = optim.state();
      ck.meta_int = {{"rng_seed", 0}, {"rng_offset", 0}, {"data_shard", 0},
                     {"data_offset", 0}, {"data_epoch", 0}, {"optim_steps", 0}};
      load_checkpoint(path, ck);
      auto get = [&](const char* k) {
        for (auto& [n, v] : ck.meta_int)
          if (n == k) return v;
        KEEL_ASSERT(false, k);
        return int64_t(0);
      };
      default_generator().set_state(uint64_t(get("rng_seed")), uint64_t(get("rng_offset")));
      loader.set_position({get("data_shard"), get("data_offset"), get("data_epoch")});
      optim.set_steps_taken(get("optim_steps"));
      result.start_step = ck.step;
      out << "resumed from " << path << " at step " << ck.step << "\n";
    }
  }

  std::unique_ptr<JsonlWriter> jsonl;
  std::unique_ptr<TensorBoardWriter> tb;
  if (cfg.logging().jsonl() || cfg.logging().tensorboard()) fs::create_directories(cfg.logging().dir());
  if (cfg.logging().jsonl()) jsonl = std::make_unique<JsonlWriter>(cfg.logging().dir() + "/metrics.jsonl");
  if (cfg.logging().tensorboard()) tb = std::make_unique<TensorBoardWriter>(cfg.logging().dir());

  const std::string config_text = config_to_text(cfg);
  auto save = [&](int64_t step) {
    fs::create_directories(ckpt_dir);
    CheckpointData ck;
    ck.step = step;
    ck.model = model.state_dict();
    ck.optim = optim.state();
    LoaderPosition pos = loader.position();
    ck.meta_text = {{"config", config_text}, {"tokenizer", cfg.data().tokenizer()}};
    ck.meta_int = {{"rng_seed", int64_t(default_generator().seed())},
                   {"rng_offset", int64_t(default_generator().offset())},
                   {"data_shard", pos.shard},
                   {"data_offset", pos.offset},
                   {"data_epoch", pos.epoch},
                   {"optim_steps", optim.steps_taken()}};
    std::string path = checkpoint_path(ckpt_dir, step);
    save_checkpoint(path, ck);
    prune_checkpoints(ckpt_dir, cfg.checkpoint().keep_last());
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
  for (; step < end; ++step) {
    const double lr = schedule.at(step);
    double loss_sum = 0;
    for (int64_t micro = 0; micro < accum; ++micro) {
      TokenBatch b = loader.next();
      Tensor loss = loss_fn(b.inputs, b.targets);
      loss_sum += loss.item();
      (accum > 1 ? mul_scalar(loss, 1.0 / double(accum)) : loss).backward();
    }
    const double loss = loss_sum / double(accum);
    KEEL_CHECK(std::isfinite(loss), "training diverged: loss is ", loss, " at step ", step + 1);
    const double norm = global_grad_norm(optim.params());
    optim.step(lr, clip_coefficient(norm, oc.grad_clip()));
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
      if (jsonl) jsonl->write({{"step", done}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                               {"tokens_per_sec", tok_s}});
      if (tb) {
        tb->add_scalar("train/loss", loss, done);
        tb->add_scalar("train/lr", lr, done);
        tb->add_scalar("train/grad_norm", norm, done);
        tb->add_scalar("train/tokens_per_sec", tok_s, done);
        tb->flush();
      }
      interval_start = Clock::now();
      interval_steps = 0;
    }
    if (tc.eval_every() > 0 && cfg.data().val_files_size() > 0 &&
        (done % tc.eval_every() == 0 || done == total)) {
      double val = evaluate(cfg, model, loss_fn, tc.eval_batches());
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
