// The GPT family's registry entry: model.gpt -> GptConfig, its validation,
// and the recipe (causal LM over token shards, the GPT sampler).
#pragma once

#include "recipes/gpt/gpt.h"
#include "recipes/recipe.h"

namespace keel::gpt {

// model.gpt with the vocabulary taken from the data when it is 0.
GptConfig gpt_config(const config::Config& cfg);
void validate_config(const config::Config& cfg);
recipes::Recipe make_recipe(const config::Config& cfg, parallel::ParallelContext& ctx);

}  // namespace keel::gpt
