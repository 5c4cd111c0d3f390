// Recipes by family: what a config's model section builds. A family is one
// folder (recipes/<family>/), one sub-message of config::Model, and one
// line in the registry (recipes/registry.cpp). Its factory receives the
// whole config and the ParallelContext and returns the module, its data,
// its loss and, optionally, a sampler. The CLI and the tests build models
// only through here.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "parallel/context.h"
#include "recipes/sampling.h"
#include "trainer/config.h"
#include "trainer/workload.h"

namespace keel::recipes {

struct Recipe : trainer::Workload {
  // prompt ids -> prompt + sampled ids; empty when the family cannot sample.
  std::function<std::vector<int32_t>(std::vector<int32_t>, const SampleOptions&)> sample;
};

struct Family {
  const char* name;                   // "gpt": the model section's name
  config::Model::FamilyCase section;  // its case of the model.family oneof
  // Refuses what this family cannot run (its model section, the task, the
  // data), naming the field: "config: model.gpt.n_head ...".
  void (*validate)(const config::Config& cfg);
  Recipe (*make)(const config::Config& cfg, parallel::ParallelContext& ctx);
};

// Every registered family, in registry order.
const std::vector<Family>& families();
// The family whose section the config's model holds; keel::Error naming
// the known ones when it holds none.
const Family& family_of(const config::Config& cfg);

// The trainer's sections (trainer::validate_config), then the family's.
void validate_config(const config::Config& cfg);
// Validates, then builds the config's family on `ctx`, which must outlive
// the recipe (its module draws dropout masks from ctx's RNG streams).
Recipe make_recipe(const config::Config& cfg, parallel::ParallelContext& ctx);

}  // namespace keel::recipes
