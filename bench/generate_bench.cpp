// Generation speed at a long context: the small Mamba (recurrent: a conv
// and SSM state per layer, O(1) per token) against the small GPT (which
// recomputes its whole window per token: keel has no KV cache yet), both
// with random weights, after a prompt of --context tokens. Each model
// samples 1 and then 1 + --tokens new tokens; the difference of the two
// times over --tokens is the cost of one token at that context, so the
// prompt's own cost (GPT's first window, Mamba's prefill) drops out.
// Prints tokens/s per family and mamba / gpt.
//
//   generate_bench [--context 1024] [--tokens 32] [--threads 0]
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "recipes/gpt/gpt.h"
#include "recipes/mamba/mamba.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace keel;

template <typename F>
double seconds(const F& f) {
  auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  int64_t context = 1024, tokens = 32;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--context")
      context = std::atol(argv[i + 1]);
    else if (k == "--tokens")
      tokens = std::atol(argv[i + 1]);
    else if (k == "--threads")
      threads = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  if (threads > 0) omp_set_num_threads(threads);
  // The small recipes' shapes (recipes/{gpt,mamba}/configs/small.pbtxt), bytes.
  gpt::GptConfig gc;
  gc.vocab_size = 256;
  gc.padded_vocab_size = 256;
  gc.block_size = context + tokens + 1;
  gc.n_layer = 4;
  gc.n_head = 4;
  gc.n_embd = 192;
  gpt::GPT gpt_model(gc, 1);
  mamba::MambaLMConfig mc;
  mc.vocab_size = 256;
  mc.padded_vocab_size = 256;
  mc.n_layer = 6;
  mc.n_embd = 192;
  mamba::MambaLM mamba_model(mc, 2);
  gpt_model.eval();
  mamba_model.eval();
  std::vector<int32_t> prompt(static_cast<size_t>(context));
  for (int64_t i = 0; i < context; ++i) prompt[size_t(i)] = int32_t((i * 37 + 11) % 256);
  recipes::SampleOptions one, many;
  one.max_new_tokens = 1;
  many.max_new_tokens = 1 + tokens;
  one.temperature = many.temperature = 0;  // greedy: no stop token, fixed work
  auto gpt_gen = [&](const recipes::SampleOptions& o) {
    recipes::sample_by_recompute([&](const Tensor& ids) { return gpt_model.forward(ids); },
                                 Device::cpu(), gc.block_size, prompt, o);
  };
  auto mamba_gen = [&](const recipes::SampleOptions& o) { mamba_model.generate(prompt, o); };
  const double g =
      (seconds([&] { gpt_gen(many); }) - seconds([&] { gpt_gen(one); })) / double(tokens);
  const double m =
      (seconds([&] { mamba_gen(many); }) - seconds([&] { mamba_gen(one); })) / double(tokens);
  std::printf("# generate: context %ld, %ld tokens, %d threads, small shapes (C=192)\n",
              long(context), long(tokens), omp_get_max_threads());
  std::printf("%-8s %12s\n", "family", "tokens/s");
  std::printf("%-8s %12.1f\n", "gpt", 1.0 / g);
  std::printf("%-8s %12.1f\n", "mamba", 1.0 / m);
  std::printf("mamba/gpt: %.1f\n", g / m);
  return 0;
}
