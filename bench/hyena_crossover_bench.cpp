// The Hyena operator against keel's causal self-attention at equal width,
// over sequence lengths: forward + backward of one mixer on (B, T, C),
// median of a few repetitions, on the CPU or a GPU (--device cuda). Both
// sides are keel (attention: the fused flash-style op with its QKV and
// output projections; Hyena: nn::HyenaOperator of order 2, whose long
// convolutions are fftconv), so the table is the ratio of their costs,
// O(T^2) against O(T log T). Prints, per T, the two times and
// attention / hyena, then the first T at which Hyena is faster.
//
//   hyena_crossover_bench [--width 256] [--heads 4] [--batch 1] [--tmin 256] [--tmax 16384]
//                         [--reps 3] [--threads 0] [--device cpu|cuda]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "nn/attention.h"
#include "nn/hyena.h"

#ifdef KEEL_WITH_CUDA
#include "core/cuda/stream.h"
#endif

namespace {

using Clock = std::chrono::steady_clock;
using namespace keel;

struct Args {
  int64_t width = 256, heads = 4, batch = 1, tmin = 256, tmax = 16384;
  int reps = 3, threads = 0;
  std::string device = "cpu";
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--width")
      a.width = std::atol(next());
    else if (k == "--heads")
      a.heads = std::atol(next());
    else if (k == "--batch")
      a.batch = std::atol(next());
    else if (k == "--tmin")
      a.tmin = std::atol(next());
    else if (k == "--tmax")
      a.tmax = std::atol(next());
    else if (k == "--reps")
      a.reps = std::atoi(next());
    else if (k == "--threads")
      a.threads = std::atoi(next());
    else if (k == "--device")
      a.device = next();
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

void sync(const Device& d) {
#ifdef KEEL_WITH_CUDA
  if (d.is_cuda()) keel::cuda::synchronize(d.index);
#else
  (void)d;
#endif
}

// Median milliseconds of forward + backward of `f` on x (B, T, C).
template <typename F>
double time_fwd_bwd(const F& f, const Tensor& x, int reps, const Device& dev) {
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {  // the first run warms caches and plans
    Tensor xi = x.detach();
    xi.set_requires_grad(true);
    sync(dev);
    auto t0 = Clock::now();
    Tensor y = f(xi);
    sum(y).backward();
    sync(dev);
    const double t = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (r > 0) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  if (a.threads > 0) omp_set_num_threads(a.threads);
  const Device dev = a.device == "cuda" ? Device::cuda(0) : Device::cpu();
  parallel::ParallelContext ctx;
  Generator g1(1), g2(2);
  nn::CausalSelfAttention attn(a.width, a.heads, true, 0.0, ctx, g1, 0.02, 0.02);
  nn::HyenaConfig hc;
  hc.d_model = a.width;
  hc.l_max = a.tmax;
  hc.emb_dim = 5;
  nn::HyenaOperator hyena(hc, g2);
  attn.to(dev);
  hyena.to(dev);
  std::printf(
      "# hyena crossover: B=%ld C=%ld heads=%ld, forward+backward of one mixer, %s, %d threads\n",
      long(a.batch), long(a.width), long(a.heads), a.device.c_str(), omp_get_max_threads());
  std::printf("%8s %14s %14s %12s\n", "T", "attention_ms", "hyena_ms", "attn/hyena");
  int64_t crossover = -1;
  double last_ratio = 0;
  for (int64_t T = a.tmin; T <= a.tmax; T *= 2) {
    Generator gx(T);
    Tensor x = randn({a.batch, T, a.width}, gx).to(dev);  // (B, T, C)
    const double ta =
        time_fwd_bwd([&](const Tensor& in) { return attn.forward(in); }, x, a.reps, dev);
    const double th =
        time_fwd_bwd([&](const Tensor& in) { return hyena.forward(in); }, x, a.reps, dev);
    last_ratio = ta / th;
    if (crossover < 0 && th < ta) crossover = T;
    std::printf("%8ld %14.2f %14.2f %12.2f\n", long(T), ta, th, last_ratio);
    std::fflush(stdout);
  }
  if (crossover > 0)
    std::printf("# hyena faster from T=%ld; attention/hyena at T=%ld: %.2f\n", long(crossover),
                long(a.tmax), last_ratio);
  else
    std::printf("# hyena not faster up to T=%ld\n", long(a.tmax));
  return 0;
}
