// The Mamba family's registry entry: model.mamba -> MambaLMConfig, its
// validation, and the recipe (causal LM over token shards; recurrent
// sampling).
#pragma once

#include "recipes/mamba/mamba.h"
#include "recipes/recipe.h"

namespace keel::mamba {

// model.mamba with the vocabulary taken from the data when it is 0.
MambaLMConfig mamba_config(const config::Config& cfg);
void validate_config(const config::Config& cfg);
recipes::Recipe make_recipe(const config::Config& cfg, parallel::ParallelContext& ctx);

}  // namespace keel::mamba
