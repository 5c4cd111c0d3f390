// FFT long convolution, keel's side of bench/fftconv.sh: forward and
// forward + backward (du, dk, dD) of kernels::fftconv at f32 with a filter
// as long as the sequence (L = T, Hyena's case) and the skip term D, for
// B * C rows of T (B = rows / C). The reference is bench/fftconv_torch.py.
// Timed on the wall clock after warmup (median of --iters runs); on CUDA
// each run ends with a stream synchronisation. Prints one line per T:
//   keel device=cpu T=1024 B=64 C=768 fwd_ms=... fwdbwd_ms=...
//   bench/fftconv_bench [--rows B*C] [--channels C] [--seq T] [--max-seq T]
//                       [--device cpu|cuda] [--warmup N] [--iters N]
// --seq 0 sweeps T = 1k, 2k, ... up to --max-seq (default 64k).
// Exits 2 (after saying why) for --device cuda without CUDA or a GPU.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/fftconv.h"

#ifdef KEEL_WITH_CUDA
#include "core/cuda/stream.h"
#endif

namespace {

struct Args {
  int64_t rows = 64 * 768, channels = 768, seq = 0, max_seq = 65536;
  std::string device = "cpu";
  int warmup = 1, iters = 5;
};

[[noreturn]] void usage(const char* prog, const char* bad) {
  std::fprintf(stderr,
               "%s: bad argument '%s'\nusage: %s [--rows B*C] [--channels C] [--seq T]"
               " [--max-seq T] [--device cpu|cuda] [--warmup N] [--iters N]\n",
               prog, bad, prog);
  std::exit(1);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(argv[0], argv[i]);
    const std::string val = argv[++i];
    if (k == "--device") {
      if (val != "cpu" && val != "cuda") usage(argv[0], val.c_str());
      a.device = val;
      continue;
    }
    char* end = nullptr;
    const long long v = std::strtoll(val.c_str(), &end, 10);
    if (end == val.c_str() || *end != '\0' || v < 0) usage(argv[0], val.c_str());
    if (k == "--rows")
      a.rows = v;
    else if (k == "--channels")
      a.channels = v;
    else if (k == "--seq")
      a.seq = v;
    else if (k == "--max-seq")
      a.max_seq = v;
    else if (k == "--warmup")
      a.warmup = int(v);
    else if (k == "--iters")
      a.iters = int(v);
    else
      usage(argv[0], k.c_str());
  }
  if (a.iters < 1 || a.channels < 1 || a.rows < a.channels || a.rows % a.channels != 0)
    usage(argv[0], "(values: --rows must be a multiple of --channels)");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace keel;
  const Args a = parse(argc, argv);
  Device dev = Device::cpu();
  if (a.device == "cuda") {
#ifndef KEEL_WITH_CUDA
    std::printf("fftconv_bench: keel was built without CUDA (-DKEEL_CUDA=ON); nothing to time\n");
    return 2;
#else
    if (!cuda_available()) {
      std::printf("fftconv_bench: no CUDA device visible; nothing to time\n");
      return 2;
    }
    dev = Device::cuda(0);
#endif
  }
  auto sync = [&] {
#ifdef KEEL_WITH_CUDA
    if (dev.is_cuda()) keel::cuda::synchronize(dev.index);
#endif
  };
  std::vector<int64_t> seqs;
  if (a.seq > 0)
    seqs = {a.seq};
  else
    for (int64_t T = 1024; T <= a.max_seq; T *= 2) seqs.push_back(T);
  auto time_ms = [&](auto&& fn) {
    for (int i = 0; i < a.warmup; ++i) fn();
    sync();
    std::vector<double> ms;
    for (int i = 0; i < a.iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      fn();
      sync();
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  const int64_t C = a.channels, B = a.rows / C;
  for (int64_t T : seqs) {
    Tensor u = randn({B, C, T}).to(dev);   // (B, C, T)
    Tensor k = randn({C, T}).to(dev);      // (C, L = T)
    Tensor D = randn({C}).to(dev);         // (C)
    Tensor dy = randn({B, C, T}).to(dev);  // (B, C, T)
    const double fwd = time_ms([&] { (void)kernels::fftconv(u, k, D); });
    const double fwdbwd = time_ms([&] {
      (void)kernels::fftconv(u, k, D);
      (void)kernels::fftconv_backward(u, k, dy, true, true, true, D);
    });
    std::printf("keel device=%s T=%lld B=%lld C=%lld fwd_ms=%.2f fwdbwd_ms=%.2f\n",
                a.device.c_str(), (long long)T, (long long)B, (long long)C, fwd, fwdbwd);
    std::fflush(stdout);
  }
  return 0;
}
