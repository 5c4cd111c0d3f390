#include "trainer/run_state.h"

#include "trainer/checkpoint.h"
#include "trainer/trainer.h"

namespace keel::trainer {

namespace {

// The data position under /meta/data_<name>.
NamedInts data_meta(const NamedInts& position) {
  NamedInts out;
  for (const auto& [name, v] : position) out.emplace_back("data_" + name, v);
  return out;
}

int64_t value_of(const NamedInts& meta, const std::string& key) {
  for (const auto& [n, v] : meta)
    if (n == key) return v;
  KEEL_ASSERT(false, key);
  return 0;
}

}  // namespace

void save_run(const std::string& path, int64_t step, const config::Config& cfg, RunState& s) {
  CheckpointParts ck;
  ck.step = step;
  ck.model = model_parts(s.model, s.ctx, true);
  ck.optim = s.optimizer.state_parts(true);
  ck.meta_text = {{"config", config_to_text(cfg)}, {"tokenizer", cfg.data().tokenizer()}};
  Generator& rng = s.ctx.rng(parallel::RngRegion::Replicated);
  Generator& mp = s.ctx.rng(parallel::RngRegion::ModelParallel);
  ck.meta_int = {{"rng_seed", int64_t(rng.seed())},
                 {"rng_offset", int64_t(rng.offset())},
                 {"rng_mp_seed", int64_t(mp.seed())},
                 {"rng_mp_offset", int64_t(mp.offset())},
                 {"rng_default_seed", int64_t(default_generator().seed())},
                 {"rng_default_offset", int64_t(default_generator().offset())},
                 {"optim_steps", s.optimizer.steps_taken()},
                 {"loss_scale_clean_steps", s.scaler.clean_steps()}};
  for (const auto& e : data_meta(s.data.position())) ck.meta_int.push_back(e);
  ck.meta_float = {{"loss_scale", s.scaler.scale()}};
  save_checkpoint(path, ck, s.ctx.world());
}

int64_t load_run(const std::string& path, const config::Config& cfg, RunState& s) {
  const bool resume_scaler =
      cfg.train().precision() == "fp16" && checkpoint_config(path).train().precision() == "fp16";
  // Checkpoints written before the context's RNG streams hold one
  // generator's state (rng_seed/offset, the default generator's then).
  bool streams = false;
  for (const TensorInfo& t : list_checkpoint(path))
    streams = streams || t.name == "/meta/rng_mp_seed";
  CheckpointParts ck;
  ck.model = model_parts(s.model, s.ctx, false);
  ck.optim = s.optimizer.state_parts(false);
  ck.meta_int = {{"rng_seed", 0}, {"rng_offset", 0}, {"optim_steps", 0}};
  if (streams)
    for (const char* key :
         {"rng_mp_seed", "rng_mp_offset", "rng_default_seed", "rng_default_offset"})
      ck.meta_int.emplace_back(key, 0);
  const NamedInts data = data_meta(s.data.position());
  for (const auto& e : data) ck.meta_int.push_back(e);
  if (resume_scaler) {
    ck.meta_int.emplace_back("loss_scale_clean_steps", 0);
    ck.meta_float.emplace_back("loss_scale", 0.0);
  }
  load_checkpoint(path, ck, s.ctx.world());
  const auto seed = uint64_t(value_of(ck.meta_int, "rng_seed"));
  const auto offset = uint64_t(value_of(ck.meta_int, "rng_offset"));
  s.ctx.rng(parallel::RngRegion::Replicated).set_state(seed, offset);
  if (streams) {
    s.ctx.rng(parallel::RngRegion::ModelParallel)
        .set_state(uint64_t(value_of(ck.meta_int, "rng_mp_seed")),
                   uint64_t(value_of(ck.meta_int, "rng_mp_offset")));
    default_generator().set_state(uint64_t(value_of(ck.meta_int, "rng_default_seed")),
                                  uint64_t(value_of(ck.meta_int, "rng_default_offset")));
  } else {
    // The model-parallel stream as a fresh run seeds it; the others where
    // the one generator was.
    s.ctx.seed(seed);
    s.ctx.rng(parallel::RngRegion::Replicated).set_state(seed, offset);
    default_generator().set_state(seed, offset);
  }
  NamedInts position;
  for (const auto& [name, v] : data)
    position.emplace_back(name.substr(5), value_of(ck.meta_int, name));
  s.data.set_position(position);
  s.optimizer.set_steps_taken(value_of(ck.meta_int, "optim_steps"));
  if (resume_scaler)
    s.scaler.set_state(ck.meta_float.at(0).second, value_of(ck.meta_int, "loss_scale_clean_steps"));
  return ck.step;
}

}  // namespace keel::trainer
