#include "recipes/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/autograd.h"

namespace keel::recipes {

int32_t sample_from_logits(const std::vector<float>& logits, double temperature, int64_t top_k,
                           double u) {
  KEEL_CHECK(!logits.empty(), "sample: empty logits");
  if (temperature <= 0)
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  size_t k = top_k > 0 ? std::min<size_t>(size_t(top_k), logits.size()) : logits.size();
  std::partial_sort(order.begin(), order.begin() + long(k), order.end(),
                    [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  const double top = logits[size_t(order[0])];
  std::vector<double> p(k);
  double total = 0;
  for (size_t i = 0; i < k; ++i) {
    p[i] = std::exp((double(logits[size_t(order[i])]) - top) / temperature);
    total += p[i];
  }
  double target = u * total, acc = 0;
  for (size_t i = 0; i < k; ++i) {
    acc += p[i];
    if (target < acc) return order[i];
  }
  return order[k - 1];
}

std::vector<int32_t> sample_tokens(
    const std::function<std::vector<float>(const std::vector<int32_t>&)>& next_logits,
    std::vector<int32_t> ids, const SampleOptions& opt) {
  KEEL_CHECK(!ids.empty(), "generate: the prompt encodes to no tokens");
  NoGradGuard no_grad;
  Generator gen(opt.seed);
  for (int64_t n = 0; n < opt.max_new_tokens; ++n) {
    const std::vector<float> last = next_logits(ids);  // (V)
    const uint64_t off = gen.next_offset();
    const double u = 1.0 - double(philox_uniform_at(gen.seed(), off, 0));  // [0, 1)
    const int32_t next = sample_from_logits(last, opt.temperature, opt.top_k, u);
    ids.push_back(next);
    if (opt.stop_token >= 0 && next == opt.stop_token) break;
  }
  return ids;
}

std::vector<int32_t> sample_by_recompute(const std::function<Tensor(const Tensor&)>& forward,
                                         Device device, int64_t block_size,
                                         std::vector<int32_t> prompt, const SampleOptions& opt) {
  auto next_logits = [&](const std::vector<int32_t>& ids) {
    const int64_t start = std::max<int64_t>(0, int64_t(ids.size()) - block_size);
    std::vector<int32_t> window(ids.begin() + start, ids.end());
    // (1, T) on the model's device (logits come back through to_vector)
    Tensor x = from_vector<int32_t>(window, {1, int64_t(window.size())}).to(device);
    Tensor logits = forward(x);                                      // (1, T, V)
    return logits.select(1, logits.size(1) - 1).to_vector<float>();  // (V)
  };
  return sample_tokens(next_logits, std::move(prompt), opt);
}

}  // namespace keel::recipes
