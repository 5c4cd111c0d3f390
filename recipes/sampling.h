// Options for sampling tokens from a language model, shared by every
// family's sampler (recipes/<family>/): temperature, top-k, a seed, and a
// token that ends the sample.
#pragma once

#include <cstdint>

namespace keel::recipes {

struct SampleOptions {
  int64_t max_new_tokens = 200;
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: the whole vocabulary
  uint64_t seed = 0;
  int64_t stop_token = -1;   // stop after emitting this id (e.g. end of text)
};

}  // namespace keel::recipes
