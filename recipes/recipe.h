// Recipes by family: the model a config names, its loss for the trainer and
// its sampler. The CLI and the tests build models only through here.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "recipes/gpt/generate.h"
#include "trainer/trainer.h"

namespace keel::recipes {

struct Recipe {
  std::shared_ptr<nn::Module> module;
  trainer::LossFn loss;
  std::function<std::vector<int32_t>(std::vector<int32_t>, const gpt::SampleOptions&)> generate;
};

// vocab_size: the tokenizer's, used when model.vocab_size is 0.
gpt::GptConfig gpt_config(const config::Model& m, int64_t vocab_size);
Recipe make_recipe(const config::Config& cfg, int64_t vocab_size);

}  // namespace keel::recipes
