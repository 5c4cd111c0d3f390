// Autoregressive sampling from a GPT: temperature and top-k, with draws from
// a Philox generator so a (seed, prompt) pair always gives the same text.
#pragma once

#include <cstdint>
#include <vector>

#include "recipes/gpt/gpt.h"
#include "recipes/sampling.h"

namespace keel::gpt {

using recipes::SampleOptions;

// Returns prompt + sampled ids. The context is cut to the model's block size.
std::vector<int32_t> generate(const GPT& model, std::vector<int32_t> prompt,
                              const SampleOptions& opt);

// Picks an id from logits (V) with temperature and top-k, using uniform u in [0, 1).
int32_t sample_from_logits(const std::vector<float>& logits, double temperature, int64_t top_k,
                           double u);

}  // namespace keel::gpt
