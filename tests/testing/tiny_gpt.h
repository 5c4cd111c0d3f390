// The smallest GPT the nn tests build: 2 layers, 2 heads, width 8, a
// vocabulary of 50 (padded to 128) and a context of 16.
#pragma once

#include "recipes/gpt/gpt.h"

namespace keel::testing {

inline gpt::GptConfig tiny_gpt_config(double dropout = 0.0) {
  gpt::GptConfig c;
  c.vocab_size = 50;
  c.block_size = 16;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  c.dropout = dropout;
  return c;
}

}  // namespace keel::testing
