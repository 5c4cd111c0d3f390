#include "trainer/config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace keel::trainer {

namespace pb = google::protobuf;

namespace {

class Collector final : public pb::io::ErrorCollector {
 public:
  explicit Collector(std::string source) : source_(std::move(source)) {}
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty())
      first_ = detail::cat(source_, ":", line + 1, ":", column + 1, ": ", message);
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
    walked += (walked.empty() ? "" : ".") + names[i];
    KEEL_CHECK(f != nullptr, "--set ", assignment, ": unknown config field '", walked, "'");
    const pb::Reflection* r = msg->GetReflection();
    if (i + 1 < names.size()) {
      KEEL_CHECK(f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated(),
                 "--set ", assignment, ": '", walked, "' is not a section");
      msg = r->MutableMessage(msg, f);
      continue;
    }
    KEEL_CHECK(f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE, "--set ", assignment,
               ": '", walked, "' is a section, not a value");
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

config::Config parse_config(const std::string& text, const std::string& source,
                            const std::vector<std::string>& overrides) {
  config::Config cfg;
  pb::TextFormat::Parser parser;
  Collector errors(source);
  parser.RecordErrorsTo(&errors);
  KEEL_CHECK(parser.ParseFromString(text, &cfg), "config ", errors.first());
  for (const std::string& o : overrides) apply_override(cfg, o);
  return cfg;
}

config::Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  KEEL_CHECK(in.good(), "config file '", path, "' cannot be opened");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, overrides);
}

namespace {
bool valid_device_name(const std::string& s) {
  if (s == "cpu" || s == "cuda") return true;
  const std::string n = s.rfind("cuda:", 0) == 0 ? s.substr(5) : "";
  return !n.empty() && n.size() <= 4 && n.find_first_not_of("0123456789") == std::string::npos;
}

void require(bool present, const char* field) {
  KEEL_CHECK(present, "config: ", field, " is missing");
}
void check(bool ok, const char* field, const std::string& why) {
  KEEL_CHECK(ok, "config: ", field, " ", why);
}
}  // namespace

void validate_config(const config::Config& c) {
  const auto& m = c.model();
  check(m.family() == "gpt", "model.family", "'" + m.family() + "' is not a known family (gpt)");
  require(m.has_block_size(), "model.block_size");
  require(m.has_n_layer(), "model.n_layer");
  require(m.has_n_head(), "model.n_head");
  require(m.has_n_embd(), "model.n_embd");
  check(m.vocab_size() >= 0, "model.vocab_size", "must be >= 0");
  check(m.block_size() > 0, "model.block_size", "must be positive");
  check(m.n_layer() > 0, "model.n_layer", "must be positive");
  check(m.n_head() > 0, "model.n_head", "must be positive");
  check(m.n_embd() > 0 && m.n_embd() % m.n_head() == 0, "model.n_embd",
        "must be a positive multiple of model.n_head");
  check(m.dropout() >= 0 && m.dropout() < 1, "model.dropout", "must be in [0, 1)");
  check(m.init_std() > 0, "model.init_std", "must be positive");

  const auto& d = c.data();
  require(d.train_files_size() > 0, "data.train_files");
  require(d.has_batch_size(), "data.batch_size");
  require(d.has_seq_len(), "data.seq_len");
  check(d.batch_size() > 0, "data.batch_size", "must be positive");
  check(d.seq_len() > 0 && d.seq_len() <= m.block_size(), "data.seq_len",
        "must be in [1, model.block_size]");
  check(d.tokenizer() == "gpt2" || d.tokenizer() == "byte", "data.tokenizer",
        "'" + d.tokenizer() + "' is not gpt2 or byte");

  const auto& o = c.optim();
  check(o.lr() > 0, "optim.lr", "must be positive");
  check(o.weight_decay() >= 0, "optim.weight_decay", "must be >= 0");
  check(o.beta1() >= 0 && o.beta1() < 1, "optim.beta1", "must be in [0, 1)");
  check(o.beta2() >= 0 && o.beta2() < 1, "optim.beta2", "must be in [0, 1)");
  check(o.eps() > 0, "optim.eps", "must be positive");
  check(o.grad_clip() >= 0, "optim.grad_clip", "must be >= 0 (0 disables clipping)");

  const auto& s = c.schedule();
  check(s.warmup_steps() >= 0, "schedule.warmup_steps", "must be >= 0");
  check(s.decay() == "cosine" || s.decay() == "linear" || s.decay() == "constant",
        "schedule.decay", "'" + s.decay() + "' is not cosine, linear or constant");
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
  check(d.batch_size() % t.grad_accum() == 0, "data.batch_size",
        "must be divisible by train.grad_accum");

  const auto& p = c.parallel();
  for (auto [v, name] : {std::pair{p.dp(), "parallel.dp"}, {p.tp(), "parallel.tp"},
                         {p.cp(), "parallel.cp"}, {p.ep(), "parallel.ep"}})
    check(v >= 1, name, "must be >= 1");
  check(p.tp() == 1 && p.cp() == 1 && p.ep() == 1, "parallel",
        "tp, cp and ep other than 1 are not available yet in this build");
  check(p.zero_stage() == 0 || p.zero_stage() == 1, "parallel.zero_stage", "must be 0 or 1");
  check(d.batch_size() % (t.grad_accum() * p.dp()) == 0, "data.batch_size",
        "must be divisible by train.grad_accum * parallel.dp");

  const auto& k = c.checkpoint();
  check(k.every() >= 0, "checkpoint.every", "must be >= 0");
  check(k.keep_last() >= 1, "checkpoint.keep_last", "must be >= 1");
}

std::string config_to_text(const config::Config& cfg) {
  std::string out;
  pb::TextFormat::PrintToString(cfg, &out);
  return out;
}

}  // namespace keel::trainer
