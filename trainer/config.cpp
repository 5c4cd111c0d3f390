#include "trainer/config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/error.h"
#include "trainer/tokenizer.h"

namespace keel::trainer {

namespace pb = google::protobuf;

namespace {

// Where a field of the flat, GPT-only layout before per-family sections
// went, for the message that refuses it: "" when `field` of `section`
// ("model", "data") never existed there.
std::string moved_field_hint(const std::string& section, const std::string& field) {
  if (section == "model" && field == "family")
    return "the family is now the name of a section inside model: write model { gpt { ... } }";
  if (section == "model" && config::GptModel::descriptor()->FindFieldByName(field))
    return detail::cat("model.", field, " is now a field of the family's section: write model { ",
                       "gpt { ", field, ": ... } } (--set model.gpt.", field, "=...)");
  if (section == "data" && config::ShardData::descriptor()->FindFieldByName(field))
    return detail::cat("data.", field, " is now a field of the data source: write data { ",
                       "shards { ", field, ": ... } } (--set data.shards.", field, "=...)");
  return "";
}

// The hint for the text parser's unknown-field message, or "".
std::string hint_for_parse_error(const std::string& message) {
  // 'Message type "keel.config.Model" has no field named "block_size".'
  const std::string type_mark = "Message type \"keel.config.", field_mark = "no field named \"";
  const size_t t = message.find(type_mark), f = message.find(field_mark);
  if (t == std::string::npos || f == std::string::npos) return "";
  const size_t t0 = t + type_mark.size(), f0 = f + field_mark.size();
  std::string type = message.substr(t0, message.find('"', t0) - t0);
  const std::string field = message.substr(f0, message.find('"', f0) - f0);
  for (char& c : type) c = char(std::tolower(static_cast<unsigned char>(c)));
  return moved_field_hint(type, field);
}

class Collector final : public pb::io::ErrorCollector {
 public:
  explicit Collector(std::string source) : source_(std::move(source)) {}
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty()) {
      first_ = detail::cat(source_, ":", line + 1, ":", column + 1, ": ", message);
      const std::string hint = hint_for_parse_error(message);
      if (!hint.empty()) first_ += " (" + hint + ")";
    }
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string source_, first_;
};

}  // namespace

void apply_override(config::Config& cfg, const std::string& assignment) {
  auto eq = assignment.find('=');
  KEEL_CHECK(eq != std::string::npos && eq > 0, "--set expects field=value, got '", assignment,
             "'");
  const std::string path = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  pb::Message* msg = &cfg;
  std::string walked;
  std::stringstream parts(path);
  std::string part;
  std::vector<std::string> names;
  while (std::getline(parts, part, '.')) names.push_back(part);
  for (size_t i = 0; i < names.size(); ++i) {
    const pb::Descriptor* d = msg->GetDescriptor();
    const pb::FieldDescriptor* f = d->FindFieldByName(names[i]);
    if (f == nullptr) {
      const std::string hint = i == 1 ? moved_field_hint(names[0], names[1]) : "";
      KEEL_FAIL("--set ", assignment, ": unknown config field '", walked, walked.empty() ? "" : ".",
                names[i], "'", hint.empty() ? "" : " (" + hint + ")");
    }
    walked += (walked.empty() ? "" : ".") + names[i];
    const pb::Reflection* r = msg->GetReflection();
    if (i + 1 < names.size()) {
      KEEL_CHECK(f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated(),
                 "--set ", assignment, ": '", walked, "' is not a section");
      // Entering one section of a oneof (model.gpt, data.shards) would
      // silently drop another that the config already holds.
      if (const pb::OneofDescriptor* o = f->containing_oneof()) {
        const pb::FieldDescriptor* held = r->GetOneofFieldDescriptor(*msg, o);
        KEEL_CHECK(held == nullptr || held == f, "--set ", assignment, ": the config's ",
                   walked.substr(0, walked.rfind('.')), " holds '", held ? held->name() : "",
                   "', and only one ", o->name(), " section can be set");
      }
      msg = r->MutableMessage(msg, f);
      continue;
    }
    KEEL_CHECK(f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE, "--set ", assignment, ": '",
               walked, "' is a section, not a value");
    if (f->is_repeated()) {
      r->ClearField(msg, f);
      std::stringstream items(value);
      std::string item;
      while (std::getline(items, item, ',')) {
        KEEL_CHECK(f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING, "--set ", assignment,
                   ": only repeated string fields can be set from the command line");
        r->AddString(msg, f, item);
      }
      return;
    }
    std::string literal = value;
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
      r->SetString(msg, f, value);
      return;
    }
    KEEL_CHECK(pb::TextFormat::ParseFieldValueFromString(literal, f, msg), "--set ", assignment,
               ": '", value, "' is not a valid ", f->type_name(), " for ", walked);
  }
}

namespace {
void parse_text(const std::string& text, const std::string& source, pb::Message& msg) {
  pb::TextFormat::Parser parser;
  Collector errors(source);
  parser.RecordErrorsTo(&errors);
  KEEL_CHECK(parser.ParseFromString(text, &msg), "config ", errors.first());
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  KEEL_CHECK(in.good(), "config file '", path, "' cannot be opened");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

config::Config parse_config(const std::string& text, const std::string& source,
                            const std::vector<std::string>& overrides) {
  config::Config cfg;
  parse_text(text, source, cfg);
  for (const std::string& o : overrides) apply_override(cfg, o);
  return cfg;
}

config::Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_config(read_text(path), path, overrides);
}

void load_text_file(const std::string& path, pb::Message& msg) {
  parse_text(read_text(path), path, msg);
}

namespace {
bool valid_device_name(const std::string& s) {
  if (s == "cpu" || s == "cuda") return true;
  const std::string n = s.rfind("cuda:", 0) == 0 ? s.substr(5) : "";
  return !n.empty() && n.size() <= 4 && n.find_first_not_of("0123456789") == std::string::npos;
}
}  // namespace

void require(bool present, const char* field) {
  KEEL_CHECK(present, "config: ", field, " is missing");
}
void check(bool ok, const char* field, const std::string& why) {
  KEEL_CHECK(ok, "config: ", field, " ", why);
}

void validate_config(const config::Config& c) {
  const auto& d = c.data();
  require(d.has_batch_size(), "data.batch_size");
  require(d.has_seq_len(), "data.seq_len");
  check(d.batch_size() > 0, "data.batch_size", "must be positive");
  check(d.seq_len() > 0, "data.seq_len", "must be positive");
  std::string known;
  bool tokenizer_known = false;
  for (const std::string& id : tokenizer_ids()) {
    known += (known.empty() ? "" : ", ") + id;
    tokenizer_known = tokenizer_known || id == d.tokenizer();
  }
  check(tokenizer_known, "data.tokenizer", "'" + d.tokenizer() + "' is not one of " + known);
  switch (d.source_case()) {
    case config::Data::kShards:
      require(d.shards().train_files_size() > 0, "data.shards.train_files");
      break;
    case config::Data::kSynthetic:
      check(d.synthetic().has_mqar(), "data.synthetic",
            "names no generator: write data { synthetic { mqar { ... } } }");
      break;
    case config::Data::SOURCE_NOT_SET:
      KEEL_FAIL("config: data has no source section: write data { shards { train_files: ... } }");
  }

  const auto& o = c.optim();
  check(o.lr() > 0, "optim.lr", "must be positive");
  check(o.weight_decay() >= 0, "optim.weight_decay", "must be >= 0");
  check(o.beta1() >= 0 && o.beta1() < 1, "optim.beta1", "must be in [0, 1)");
  check(o.beta2() >= 0 && o.beta2() < 1, "optim.beta2", "must be in [0, 1)");
  check(o.eps() > 0, "optim.eps", "must be positive");
  check(o.grad_clip() >= 0, "optim.grad_clip", "must be >= 0 (0 disables clipping)");

  const auto& s = c.schedule();
  check(s.warmup_steps() >= 0, "schedule.warmup_steps", "must be >= 0");
  check(s.decay() == "cosine" || s.decay() == "linear" || s.decay() == "constant", "schedule.decay",
        "'" + s.decay() + "' is not cosine, linear or constant");
  check(s.min_lr_ratio() >= 0 && s.min_lr_ratio() <= 1, "schedule.min_lr_ratio",
        "must be in [0, 1]");

  const auto& t = c.train();
  require(t.has_steps(), "train.steps");
  check(t.steps() > 0, "train.steps", "must be positive");
  check(t.grad_accum() >= 1, "train.grad_accum", "must be >= 1");
  check(t.log_every() >= 1, "train.log_every", "must be >= 1");
  check(t.eval_every() >= 0, "train.eval_every", "must be >= 0");
  check(t.eval_batches() >= 1, "train.eval_batches", "must be >= 1");
  check(t.threads() >= 0, "train.threads", "must be >= 0");
  check(valid_device_name(t.device()), "train.device",
        "'" + t.device() + "' is not cpu, cuda or cuda:N");
  check(t.precision() == "fp32" || t.precision() == "bf16" || t.precision() == "fp16",
        "train.precision", "'" + t.precision() + "' is not fp32, bf16 or fp16");
  check(t.loss_scale() >= 0, "train.loss_scale", "must be >= 0 (0: dynamic)");
  check(t.initial_loss_scale() >= 1, "train.initial_loss_scale", "must be >= 1");
  check(t.min_loss_scale() > 0 && t.min_loss_scale() <= t.initial_loss_scale(),
        "train.min_loss_scale", "must be in (0, train.initial_loss_scale]");
  check(t.loss_scale_window() >= 1, "train.loss_scale_window", "must be >= 1");
  check(t.has_stop_metric() == t.has_stop_at(), t.has_stop_metric() ? "train.stop_at" : "train.stop_metric",
        "must be set with the other (train.stop_metric names the metric, train.stop_at the value)");
  check(!t.has_stop_metric() || t.eval_every() > 0, "train.stop_metric",
        "needs train.eval_every > 0 (the run stops at a validation)");
  check(d.batch_size() % t.grad_accum() == 0, "data.batch_size",
        "must be divisible by train.grad_accum");

  const auto& p = c.parallel();
  for (auto [v, name] : {std::pair{p.dp(), "parallel.dp"},
                         {p.tp(), "parallel.tp"},
                         {p.cp(), "parallel.cp"},
                         {p.ep(), "parallel.ep"}})
    check(v >= 1, name, "must be >= 1");
  check(p.zero_stage() == 0 || p.zero_stage() == 1, "parallel.zero_stage", "must be 0 or 1");
  check(!p.sequence_parallel() || p.tp() > 1, "parallel.sequence_parallel",
        "needs parallel.tp > 1 (it splits the sequence over the tp ranks)");
  check(!p.sequence_parallel() || d.seq_len() % p.tp() == 0, "data.seq_len",
        "must divide by parallel.tp (" + std::to_string(p.tp()) +
            ") with parallel.sequence_parallel");
  check(p.bucket_mb() > 0, "parallel.bucket_mb", "must be positive");
  // The batch rows are split over the data ranks, dp x ep.
  check(d.batch_size() % (t.grad_accum() * p.dp() * p.ep()) == 0, "data.batch_size",
        "must be divisible by train.grad_accum * parallel.dp * parallel.ep");

  const auto& k = c.checkpoint();
  check(k.every() >= 0, "checkpoint.every", "must be >= 0");
  check(k.keep_last() >= 1, "checkpoint.keep_last", "must be >= 1");
}

namespace {

// Copies every set field of `from` into the field of the same name of `to`
// (repeated fields appended), except those in `skip`: through the text
// format, which matches fields by name.
void copy_fields(const pb::Message& from, pb::Message& to, const std::vector<std::string>& skip) {
  std::unique_ptr<pb::Message> kept(from.New());
  kept->CopyFrom(from);
  for (const std::string& name : skip)
    kept->GetReflection()->ClearField(kept.get(), kept->GetDescriptor()->FindFieldByName(name));
  std::string text;
  pb::TextFormat::PrintToString(*kept, &text);
  KEEL_ASSERT(pb::TextFormat::MergeFromString(text, &to), from.GetTypeName(), " -> ",
              to.GetTypeName());
}

config::Config migrate(const config::LegacyConfig& old) {
  config::Config c;
  KEEL_CHECK(old.model().family() == "gpt" || !old.model().has_family(), "config: model.family '",
             old.model().family(), "' is not a known family (gpt)");
  copy_fields(old.model(), *c.mutable_model()->mutable_gpt(), {"family", "checkpoint_activations"});
  if (old.model().has_checkpoint_activations())
    c.mutable_model()->set_checkpoint_activations(old.model().checkpoint_activations());
  copy_fields(old.data(), *c.mutable_data()->mutable_shards(),
              {"batch_size", "seq_len", "tokenizer", "assets_dir"});
  copy_fields(old.data(), *c.mutable_data(), {"train_files", "val_files"});
  c.mutable_task()->mutable_causal_lm();
  // The trainer's sections are the same messages in both layouts.
  for (const char* section : {"optim", "schedule", "train", "parallel", "checkpoint", "logging"}) {
    const pb::FieldDescriptor* f = old.GetDescriptor()->FindFieldByName(section);
    if (!old.GetReflection()->HasField(old, f)) continue;
    const pb::FieldDescriptor* t = c.GetDescriptor()->FindFieldByName(section);
    c.GetReflection()->MutableMessage(&c, t)->CopyFrom(old.GetReflection()->GetMessage(old, f));
  }
  return c;
}

}  // namespace

config::Config parse_checkpoint_config(const std::string& text, const std::string& source) {
  try {
    return parse_config(text, source);
  } catch (const Error&) {
    config::LegacyConfig old;
    pb::TextFormat::Parser parser;
    Collector quiet(source);
    parser.RecordErrorsTo(&quiet);
    if (!parser.ParseFromString(text, &old)) throw;  // neither layout: today's error
    return migrate(old);
  }
}

std::string config_to_text(const config::Config& cfg) {
  std::string out;
  pb::TextFormat::PrintToString(cfg, &out);
  return out;
}

}  // namespace keel::trainer
