// The sub-quadratic mixers against keel's causal self-attention at equal
// width, over sequence lengths: forward + backward of one mixer on
// (B, T, C), median of a few repetitions, on the CPU or a GPU (--device
// cuda). Every side is keel: attention is the fused flash-style op with its
// QKV and output projections (O(T^2)); Hyena is nn::HyenaOperator of order
// 2, whose long convolutions are fftconv (O(T log T)); Mamba is
// nn::MambaMixer (expand 2, state 16), whose selective scan is O(T). Prints,
// per T, the three times and attention / mixer, then for each mixer the
// first T at which it is faster than attention and the ratio at the
// longest T.
//
//   mixer_crossover_bench [--width 256] [--heads 4] [--batch 1] [--tmin 256] [--tmax 16384]
//                         [--reps 3] [--threads 0] [--device cpu|cuda]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "nn/attention.h"
#include "nn/hyena.h"
#include "nn/mamba.h"

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
  Generator g1(1), g2(2), g3(3);
  nn::CausalSelfAttention attn(a.width, a.heads, true, 0.0, ctx, g1, 0.02, 0.02);
  nn::HyenaConfig hc;
  hc.d_model = a.width;
  hc.l_max = a.tmax;
  hc.emb_dim = 5;
  nn::HyenaOperator hyena(hc, g2);
  nn::MambaConfig mc;
  mc.d_model = a.width;
  nn::MambaMixer mamba(mc, g3);
  attn.to(dev);
  hyena.to(dev);
  mamba.to(dev);
  std::printf(
      "# mixer crossover: B=%ld C=%ld heads=%ld, forward+backward of one mixer, %s, %d threads\n",
      long(a.batch), long(a.width), long(a.heads), a.device.c_str(), omp_get_max_threads());
  std::printf("%8s %14s %12s %12s %12s %12s\n", "T", "attention_ms", "hyena_ms", "mamba_ms",
              "attn/hyena", "attn/mamba");
  int64_t cross_h = -1, cross_m = -1;
  double last_h = 0, last_m = 0;
  for (int64_t T = a.tmin; T <= a.tmax; T *= 2) {
    Generator gx(static_cast<uint64_t>(T));
    Tensor x = randn({a.batch, T, a.width}, gx).to(dev);  // (B, T, C)
    const double ta =
        time_fwd_bwd([&](const Tensor& in) { return attn.forward(in); }, x, a.reps, dev);
    const double th =
        time_fwd_bwd([&](const Tensor& in) { return hyena.forward(in); }, x, a.reps, dev);
    const double tm =
        time_fwd_bwd([&](const Tensor& in) { return mamba.forward(in); }, x, a.reps, dev);
    last_h = ta / th;
    last_m = ta / tm;
    if (cross_h < 0 && th < ta) cross_h = T;
    if (cross_m < 0 && tm < ta) cross_m = T;
    std::printf("%8ld %14.2f %12.2f %12.2f %12.2f %12.2f\n", long(T), ta, th, tm, last_h, last_m);
    std::fflush(stdout);
  }
  for (auto [name, cross, last] :
       {std::tuple{"hyena", cross_h, last_h}, {"mamba", cross_m, last_m}}) {
    if (cross > 0)
      std::printf("# %s faster than attention from T=%ld; attention/%s at T=%ld: %.2f\n", name,
                  long(cross), name, long(a.tmax), last);
    else
      std::printf("# %s not faster than attention up to T=%ld\n", name, long(a.tmax));
  }
  return 0;
}
