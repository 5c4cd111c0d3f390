// Loading and checking a run configuration (trainer/config.proto in text
// format) with command-line overrides `--set optim.lr=3e-4`. Every refusal
// names the field (and the file line for parse errors).
#pragma once

#include <string>
#include <vector>

#include "trainer/config.pb.h"

namespace keel::trainer {

// Parses `text` (named `source` in messages) and applies `overrides`.
config::Config parse_config(const std::string& text, const std::string& source,
                            const std::vector<std::string>& overrides = {});
config::Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Any message of this schema (an MQAR grid, a cell's result) from a text
// format file; a parse error names the file, line and column.
void load_text_file(const std::string& path, google::protobuf::Message& msg);
// Applies one "dotted.field=value" override; repeated fields take a comma list.
// A field of the old flat layout (model.n_head, data.train_files) is refused
// with where it lives now.
void apply_override(config::Config& cfg, const std::string& assignment);
// The trainer's own sections (data, optim, schedule, train, parallel,
// checkpoint, logging): refuses missing required fields and out-of-range
// values, naming the field. The model section is its family's to check
// (recipes::validate_config checks both).
void validate_config(const config::Config& cfg);
std::string config_to_text(const config::Config& cfg);

// A checkpoint's /meta/config text: today's layout, or the flat GPT-only
// layout of checkpoints written before per-family sections, migrated
// (model.<f> -> model.gpt.<f>, data.train_files / val_files ->
// data.shards.*), so those checkpoints still evaluate, sample and resume.
// Otherwise the error today's parser gives.
config::Config parse_checkpoint_config(const std::string& text, const std::string& source);

// The refusals every section's check makes (the trainer's and each
// family's): "config: <field> is missing" and "config: <field> <why>".
void require(bool present, const char* field);
void check(bool ok, const char* field, const std::string& why);

}  // namespace keel::trainer
