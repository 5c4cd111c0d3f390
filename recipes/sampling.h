// Sampling tokens from a language model, shared by every family's sampler
// (recipes/<family>/): temperature, top-k, a seed, and a token that ends the
// sample. Draws come from a Philox generator, so a (seed, prompt) pair
// always gives the same text.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace keel::recipes {

struct SampleOptions {
  int64_t max_new_tokens = 200;
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: the whole vocabulary
  uint64_t seed = 0;
  int64_t stop_token = -1;  // stop after emitting this id (e.g. end of text)
};

// Picks an id from logits (V) with temperature and top-k, using uniform u in [0, 1).
int32_t sample_from_logits(const std::vector<float>& logits, double temperature, int64_t top_k,
                           double u);

// Returns prompt + sampled ids: `next_logits(ids)` gives the logits (V) of
// the token after ids (every id so far, prompt included); the draws, the
// temperature, top-k and the stop token are applied here.
std::vector<int32_t> sample_tokens(
    const std::function<std::vector<float>(const std::vector<int32_t>&)>& next_logits,
    std::vector<int32_t> prompt, const SampleOptions& opt);

// Returns prompt + sampled ids, running `forward` (ids (1, T) on `device`
// -> logits (1, T, V)) over the last `block_size` tokens for every new
// token: the whole window is recomputed each time (no cache).
std::vector<int32_t> sample_by_recompute(const std::function<Tensor(const Tensor&)>& forward,
                                         Device device, int64_t block_size,
                                         std::vector<int32_t> prompt, const SampleOptions& opt);

}  // namespace keel::recipes
