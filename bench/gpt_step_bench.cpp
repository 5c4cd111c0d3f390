// One full GPT training step, timed: forward, backward, global grad norm +
// clip, AdamW, zero_grad, on a fixed random batch; on the CPU or a GPU
// (--device cuda), in fp32 or bf16/fp16 compute over f32 master weights
// (--precision, as the trainer's train.precision). The reference is
// bench/gpt_step_torch.py on the same sizes; bench/gpt_step.sh runs both and
// prints the ratio. Output: one line `keel tokens_per_s=... ms_per_step=...`
// plus, per phase, the mean milliseconds (forward, backward, optimizer) and
// the fastest single step (min_ms: on a shared machine the least disturbed).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "autograd/autocast.h"
#include "recipes/gpt/gpt.h"
#include "trainer/optim.h"

#ifdef KEEL_WITH_CUDA
#include "core/cuda/stream.h"
#endif

// OpenBLAS's own thread count: with its OpenMP build omp_set_num_threads
// already covers it, with the pthread build it does not.
extern "C" void openblas_set_num_threads(int num_threads);

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  int64_t layers = 4, width = 256, heads = 4, seq = 256, batch = 8, vocab = 50257;
  int steps = 10, warmup = 2, threads = 0;
  uint64_t seed = 1337;
  std::string device = "cpu";     // cpu | cuda
  std::string precision = "fp32";  // fp32 | bf16 | fp16
};

[[noreturn]] void usage(const char* prog, const char* bad) {
  std::fprintf(stderr,
               "%s: bad argument '%s'\nusage: %s [--layers L] [--width C] [--heads H] [--seq T]"
               " [--batch B] [--vocab V] [--steps N] [--warmup N] [--threads N] [--seed S]"
               " [--device cpu|cuda] [--precision fp32|bf16|fp16]\n",
               prog, bad, prog);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(argv[0], argv[i]);
    if (k == "--device" || k == "--precision") {
      const std::string v = argv[++i];
      (k == "--device" ? a.device : a.precision) = v;
      continue;
    }
    char* end = nullptr;
    const long long v = std::strtoll(argv[i + 1], &end, 10);
    if (end == argv[i + 1] || *end != '\0' || v < 0) usage(argv[0], argv[i + 1]);
    ++i;
    if (k == "--layers") a.layers = v;
    else if (k == "--width") a.width = v;
    else if (k == "--heads") a.heads = v;
    else if (k == "--seq") a.seq = v;
    else if (k == "--batch") a.batch = v;
    else if (k == "--vocab") a.vocab = v;
    else if (k == "--steps") a.steps = int(v);
    else if (k == "--warmup") a.warmup = int(v);
    else if (k == "--threads") a.threads = int(v);
    else if (k == "--seed") a.seed = uint64_t(v);
    else usage(argv[0], k.c_str());
  }
  if (a.steps < 1 || a.layers < 1 || a.width < 1 || a.heads < 1 || a.seq < 1 || a.batch < 1 ||
      a.vocab < 1)
    usage(argv[0], "(sizes and --steps must be positive)");
  if (a.device != "cpu" && a.device != "cuda") usage(argv[0], a.device.c_str());
  if (a.precision != "fp32" && a.precision != "bf16" && a.precision != "fp16")
    usage(argv[0], a.precision.c_str());
  return a;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Waits for the device's queued work, so phase times are the GPU's.
void sync(keel::Device d) {
#ifdef KEEL_WITH_CUDA
  if (d.is_cuda()) keel::cuda::synchronize(d.index);
#else
  (void)d;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  using namespace keel;
  const Args a = parse(argc, argv);
  if (a.threads > 0) {
    omp_set_num_threads(a.threads);
    openblas_set_num_threads(a.threads);
  }
  const int threads = omp_get_max_threads();

  gpt::GptConfig cfg;
  cfg.vocab_size = a.vocab;  // padded to a multiple of 128 (50257 -> 50304)
  cfg.block_size = a.seq;
  cfg.n_layer = a.layers;
  cfg.n_head = a.heads;
  cfg.n_embd = a.width;
  if (a.device == "cuda" && !cuda_available()) {
    std::fprintf(stderr, "gpt_step_bench: --device cuda but no CUDA device (or a build without CUDA)\n");
    return 2;
  }
  const Device device = a.device == "cuda" ? Device::cuda(0) : Device::cpu();
  const DType compute = a.precision == "bf16"   ? DType::BF16
                        : a.precision == "fp16" ? DType::F16
                                                : DType::F32;
  // fp16: a fixed loss scale keeps this benchmark's random-token gradients
  // in range; the trainer scales dynamically.
  const double loss_scale = compute == DType::F16 ? 1024.0 : 1.0;
  gpt::GPT model(cfg, a.seed);
  model.to(device);
  model.train();
  trainer::AdamW optim(model.named_parameters(), model.decayed_parameter_names(),
                       trainer::AdamWConfig{});
  const double lr = 6e-4, max_norm = 1.0;

  // A fixed random batch: inputs and their next-token targets.
  std::mt19937_64 rng(a.seed);
  std::uniform_int_distribution<int64_t> tok(0, a.vocab - 1);
  std::vector<int64_t> buf(size_t(a.batch * (a.seq + 1)));
  for (auto& t : buf) t = tok(rng);
  std::vector<int64_t> in, tgt;
  for (int64_t b = 0; b < a.batch; ++b)
    for (int64_t t = 0; t < a.seq; ++t) {
      in.push_back(buf[size_t(b * (a.seq + 1) + t)]);
      tgt.push_back(buf[size_t(b * (a.seq + 1) + t + 1)]);
    }
  const Tensor ids = from_vector(in, {a.batch, a.seq}).to(device);       // (B, T)
  const Tensor targets = from_vector(tgt, {a.batch, a.seq}).to(device);  // (B, T)

  double fwd_ms = 0, bwd_ms = 0, opt_ms = 0, total_ms = 0, min_ms = 0, loss = 0;
  for (int s = 0; s < a.warmup + a.steps; ++s) {
    const auto t0 = Clock::now();
    Tensor l;
    {
      AutocastGuard precision(compute);
      l = model.loss(ids, targets);
    }
    loss = l.item();
    const double f = ms_since(t0);
    const auto t1 = Clock::now();
    (loss_scale != 1.0 ? mul_scalar(l, loss_scale) : l).backward();
    sync(device);
    const double b = ms_since(t1);
    const auto t2 = Clock::now();
    const double norm = trainer::global_grad_norm(optim.params()) / loss_scale;
    optim.step(lr, trainer::clip_coefficient(norm, max_norm) / loss_scale);
    model.zero_grad();
    sync(device);
    const double o = ms_since(t2);
    if (s >= a.warmup) {
      fwd_ms += f;
      bwd_ms += b;
      opt_ms += o;
      const double step_ms = ms_since(t0);
      total_ms += step_ms;
      min_ms = s == a.warmup ? step_ms : std::min(min_ms, step_ms);
    }
  }
  const double n = double(a.steps);
  const double ms = total_ms / n;
  const double tokens = double(a.batch * a.seq);
  std::printf(
      "keel tokens_per_s=%.1f ms_per_step=%.2f min_ms=%.2f fwd_ms=%.2f bwd_ms=%.2f opt_ms=%.2f"
      " loss=%.4f"
      " params=%lld threads=%d layers=%lld width=%lld heads=%lld seq=%lld batch=%lld vocab=%lld"
      " steps=%d device=%s precision=%s\n",
      tokens / (ms / 1000.0), ms, min_ms, fwd_ms / n, bwd_ms / n, opt_ms / n, loss,
      static_cast<long long>(model.num_parameters()), threads, static_cast<long long>(a.layers),
      static_cast<long long>(a.width), static_cast<long long>(a.heads),
      static_cast<long long>(a.seq), static_cast<long long>(a.batch),
      static_cast<long long>(a.vocab), a.steps, a.device.c_str(), a.precision.c_str());
  return 0;
}
