// The family registry: one line per family.
#include "recipes/gpt/recipe.h"
#include "recipes/hyena/recipe.h"
#include "recipes/mamba/recipe.h"
#include "recipes/recipe.h"
#include "trainer/config.h"

namespace keel::recipes {

const std::vector<Family>& families() {
  static const std::vector<Family> all = {
      {"gpt", config::Model::kGpt, &gpt::validate_config, &gpt::make_recipe},
      {"hyena", config::Model::kHyena, &hyena::validate_config, &hyena::make_recipe},
      {"mamba", config::Model::kMamba, &mamba::validate_config, &mamba::make_recipe},
  };
  return all;
}

const Family& family_of(const config::Config& cfg) {
  std::string known;
  for (const Family& f : families()) {
    if (cfg.model().family_case() == f.section) return f;
    known += (known.empty() ? "" : ", ") + std::string(f.name);
  }
  KEEL_FAIL("config: model has no family section; write one of ", known,
            ", e.g. model { gpt { n_layer: 2 ... } }");
}

void validate_config(const config::Config& cfg) {
  trainer::validate_config(cfg);
  family_of(cfg).validate(cfg);
}

Recipe make_recipe(const config::Config& cfg, parallel::ParallelContext& ctx) {
  validate_config(cfg);
  return family_of(cfg).make(cfg, ctx);
}

}  // namespace keel::recipes
