// The Hyena family's registry entry: model.hyena -> HyenaLMConfig, its
// validation, and the recipe (causal LM over token shards; sampling
// recomputes the window for every token).
#pragma once

#include "recipes/hyena/hyena.h"
#include "recipes/recipe.h"

namespace keel::hyena {

// model.hyena with the vocabulary taken from the data when it is 0.
HyenaLMConfig hyena_config(const config::Config& cfg);
void validate_config(const config::Config& cfg);
recipes::Recipe make_recipe(const config::Config& cfg, parallel::ParallelContext& ctx);

}  // namespace keel::hyena
