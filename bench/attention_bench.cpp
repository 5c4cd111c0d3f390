// Fused attention on one GPU, keel's side of bench/attention.sh: forward and
// forward + backward of kernels::attention_{forward,backward} in bf16 at
// B * T = 16k tokens and H * D = 2048, for T in {1k, 2k, 4k, 8k, 16k},
// D in {64, 128}, causal and not (or one configuration from the flags).
// Timed with CUDA events on keel's stream after warmup; prints one line per
// configuration:
//   keel T=1024 B=16 H=32 D=64 causal=0 fwd_ms=... fwdbwd_ms=... fwd_tflops=... fwdbwd_tflops=...
// FLOPs: forward 4 B H T^2 D (two T x T x D products), backward 2.5x that
// (five products, the scores recomputed), both halved when causal; the
// reference script bench/attention_sdpa.py counts the same way.
// Exits 2 (after saying why) when keel was built without CUDA or no GPU is
// visible, so the build and the script work everywhere.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/attention.h"

#ifdef KEEL_WITH_CUDA
#include <cuda_runtime.h>

#include "core/cuda/check.h"
#include "core/cuda/stream.h"
#endif

namespace {

struct Args {
  int64_t tokens = 16384, width = 2048;  // B * T and H * D
  int64_t seq = 0, dim = 0;              // 0: all of the sweep
  int causal = -1;                       // -1: both
  int warmup = 3, iters = 10;
};

[[noreturn]] void usage(const char* prog, const char* bad) {
  std::fprintf(stderr,
               "%s: bad argument '%s'\nusage: %s [--seq T] [--dim D] [--causal 0|1] [--tokens N]"
               " [--width HD] [--warmup N] [--iters N]\n",
               prog, bad, prog);
  std::exit(1);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(argv[0], argv[i]);
    char* end = nullptr;
    const long long v = std::strtoll(argv[i + 1], &end, 10);
    if (end == argv[i + 1] || *end != '\0' || v < 0) usage(argv[0], argv[i + 1]);
    ++i;
    if (k == "--seq")
      a.seq = v;
    else if (k == "--dim")
      a.dim = v;
    else if (k == "--causal")
      a.causal = int(v);
    else if (k == "--tokens")
      a.tokens = v;
    else if (k == "--width")
      a.width = v;
    else if (k == "--warmup")
      a.warmup = int(v);
    else if (k == "--iters")
      a.iters = int(v);
    else
      usage(argv[0], k.c_str());
  }
  if (a.iters < 1 || a.tokens < 1 || a.width < 1 || a.causal > 1) usage(argv[0], "(values)");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
#ifndef KEEL_WITH_CUDA
  (void)a;
  std::printf("attention_bench: keel was built without CUDA (-DKEEL_CUDA=ON); nothing to time\n");
  return 2;
#else
  using namespace keel;
  if (!cuda_available()) {
    std::printf("attention_bench: no CUDA device visible; nothing to time\n");
    return 2;
  }
  const Device gpu = Device::cuda(0);
  cudaStream_t stream = keel::cuda::current_stream(0);
  std::vector<int64_t> seqs = {1024, 2048, 4096, 8192, 16384}, dims = {64, 128};
  std::vector<int> causals = {0, 1};
  if (a.seq > 0) seqs = {a.seq};
  if (a.dim > 0) dims = {a.dim};
  if (a.causal >= 0) causals = {a.causal};

  // Every configuration has B * H * T * D = tokens * width elements per
  // operand: make them once and view them per shape.
  const int64_t n = a.tokens * a.width;
  Tensor qf = randn({n}, DType::BF16).to(gpu);
  Tensor kf = randn({n}, DType::BF16).to(gpu);
  Tensor vf = randn({n}, DType::BF16).to(gpu);
  Tensor gf = randn({n}, DType::BF16).to(gpu);

  cudaEvent_t start, stop;
  KEEL_CUDA_CHECK(cudaEventCreate(&start));
  KEEL_CUDA_CHECK(cudaEventCreate(&stop));
  auto time_ms = [&](auto&& fn) {
    for (int i = 0; i < a.warmup; ++i) fn();
    KEEL_CUDA_CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < a.iters; ++i) fn();
    KEEL_CUDA_CHECK(cudaEventRecord(stop, stream));
    KEEL_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    KEEL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return double(ms) / a.iters;
  };

  for (int64_t T : seqs)
    for (int64_t D : dims)
      for (int causal : causals) {
        if (a.tokens % T != 0 || a.width % D != 0) {
          std::fprintf(stderr, "attention_bench: T=%lld or D=%lld does not divide the sizes\n",
                       (long long)T, (long long)D);
          return 1;
        }
        const int64_t B = a.tokens / T, H = a.width / D;
        const Shape shape = {B, H, T, D};
        Tensor q = qf.view(shape), k = kf.view(shape), v = vf.view(shape), g = gf.view(shape);
        const double fwd = time_ms([&] { (void)kernels::attention_forward(q, k, v, causal != 0); });
        const double fwdbwd = time_ms([&] {
          auto [out, lse] = kernels::attention_forward(q, k, v, causal != 0);
          (void)kernels::attention_backward(q, k, v, out, lse, g, Tensor(), causal != 0);
        });
        const double flops =
            4.0 * double(B) * double(H) * double(T) * double(T) * double(D) * (causal ? 0.5 : 1.0);
        std::printf(
            "keel T=%lld B=%lld H=%lld D=%lld causal=%d fwd_ms=%.3f fwdbwd_ms=%.3f"
            " fwd_tflops=%.1f fwdbwd_tflops=%.1f\n",
            (long long)T, (long long)B, (long long)H, (long long)D, causal, fwd, fwdbwd,
            flops / (fwd * 1e9), 3.5 * flops / (fwdbwd * 1e9));
        std::fflush(stdout);
      }
  KEEL_CUDA_CHECK(cudaEventDestroy(start));
  KEEL_CUDA_CHECK(cudaEventDestroy(stop));
  return 0;
#endif
}
