// Selective scan (Mamba-1, kernels/selective_scan.h) on the CPU, timed:
// the forward alone, forward + backward through autograd, and a streaming
// pass that reads u, delta, z, B, C and writes y once at the same sizes (the
// read-once bound: a fused scan cannot move less memory). Mamba's options:
// softplus(delta + delta_bias), D skip, SiLU(z) gate. The reference is
// bench/selective_scan_torch.py; bench/selective_scan.sh runs both.
// Output, one line per T:
//   keel B=.. D=.. N=.. T=.. fwd_ms=.. fwdbwd_ms=.. stream_ms=.. stream_gbs=.. fwd_over_stream=..
// (milliseconds: the fastest of --repeat runs, 10x as many for the short
// streaming pass, after one warm-up).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "autograd/ops.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  int64_t batch = 1, dim = 1536, nstate = 16;
  std::vector<int64_t> seqs{1024, 4096, 16384};
  int repeat = 3;
};

[[noreturn]] void usage(const char* prog, const char* bad) {
  std::fprintf(stderr,
               "%s: bad argument '%s'\nusage: %s [--batch B] [--dim D] [--nstate N]"
               " [--seq T1,T2,...] [--repeat R]\n",
               prog, bad, prog);
  std::exit(2);
}

int64_t positive(const char* prog, const std::string& s) {
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (end == s.c_str() || *end != '\0' || v < 1) usage(prog, s.c_str());
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(argv[0], argv[i]);
    const std::string v = argv[i + 1];
    if (k == "--batch")
      a.batch = positive(argv[0], v);
    else if (k == "--dim")
      a.dim = positive(argv[0], v);
    else if (k == "--nstate")
      a.nstate = positive(argv[0], v);
    else if (k == "--repeat")
      a.repeat = int(positive(argv[0], v));
    else if (k == "--seq") {
      a.seqs.clear();
      size_t p = 0;
      while (p <= v.size()) {
        const size_t q = std::min(v.find(',', p), v.size());
        a.seqs.push_back(positive(argv[0], v.substr(p, q - p)));
        p = q + 1;
      }
    } else
      usage(argv[0], k.c_str());
  }
  return a;
}

template <typename F>
double best_ms(int repeat, F&& f) {
  f();  // warm-up: page faults, allocator, caches
  double best = 1e30;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return best;
}

// Reads u, delta, z (B, D, T) and B, C (B, N, T) once and writes y once.
void stream_pass(const keel::Tensor& u, const keel::Tensor& delta, const keel::Tensor& z,
                 const keel::Tensor& Bm, const keel::Tensor& Cm, keel::Tensor& y, float* sink) {
  const int64_t rows = u.size(0) * u.size(1), T = u.size(2), bn = Bm.numel();
  const float *up = u.data<float>(), *dp = delta.data<float>(), *zp = z.data<float>();
  const float *bp = Bm.data<float>(), *cp = Cm.data<float>();
  float* yp = y.data<float>();
  float acc = 0.0f;
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (int64_t r = 0; r < rows; ++r) {
      const float *ur = up + r * T, *dr = dp + r * T, *zr = zp + r * T;
      float* yr = yp + r * T;
#pragma omp simd
      for (int64_t t = 0; t < T; ++t) yr[t] = ur[t] * dr[t] + zr[t];
    }
#pragma omp for schedule(static) reduction(+ : acc)
    for (int64_t i = 0; i < bn; ++i) acc += bp[i] + cp[i];
  }
  *sink += acc;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace keel;
  const Args a = parse(argc, argv);
  std::printf("# keel selective scan: %d threads, chunk %lld, softplus + delta_bias + D + z\n",
              omp_get_max_threads(), static_cast<long long>(kernels::kSelectiveScanChunk));
  float sink = 0.0f;
  for (const int64_t T : a.seqs) {
    const int64_t B = a.batch, D = a.dim, N = a.nstate;
    Generator gen(7);
    auto input = [&](const Shape& s, double lo, double hi) {
      Tensor t = rand_uniform(s, lo, hi, gen);
      t.set_requires_grad(true);
      return t;
    };
    kernels::SelectiveScanArgs args;
    args.u = input({B, D, T}, -1, 1), args.delta = input({B, D, T}, -4, -1);
    // Mamba's init: A = -(1..N) per channel, dt = softplus(delta + bias) in about [1e-3, 0.1].
    std::vector<float> av(size_t(D * N));
    for (int64_t i = 0; i < D * N; ++i) av[size_t(i)] = -float(i % N + 1);
    args.A = from_vector(av, {D, N});
    args.A.set_requires_grad(true);
    args.B = input({B, N, T}, -1, 1), args.C = input({B, N, T}, -1, 1);
    args.D = input({D}, 0, 1), args.z = input({B, D, T}, -1, 1);
    args.delta_bias = input({D}, -1, 0);
    args.delta_softplus = true;
    Tensor dy = rand_uniform({B, D, T}, -1, 1, gen);  // (B, D, T)

    const double fwd = best_ms(a.repeat, [&] {
      NoGradGuard ng;
      auto [y, last] = keel::selective_scan(args);
      sink += y.data<float>()[0];
    });
    const double fwdbwd = best_ms(a.repeat, [&] {
      auto [y, last] = keel::selective_scan(args);
      run_backward({y}, {dy}, false);
      sink += args.u.grad().data<float>()[0];
      for (Tensor* t :
           {&args.u, &args.delta, &args.A, &args.B, &args.C, &args.D, &args.z, &args.delta_bias})
        t->set_grad(Tensor());
    });
    Tensor ys = empty({B, D, T});  // (B, D, T)
    const double stream = best_ms(
        a.repeat, [&] { stream_pass(args.u, args.delta, args.z, args.B, args.C, ys, &sink); });
    const double bytes = 4.0 * double(4 * B * D * T + 2 * B * N * T);
    std::printf(
        "keel B=%lld D=%lld N=%lld T=%lld fwd_ms=%.2f fwdbwd_ms=%.2f stream_ms=%.2f "
        "stream_gbs=%.1f fwd_over_stream=%.2f\n",
        static_cast<long long>(B), static_cast<long long>(D), static_cast<long long>(N),
        static_cast<long long>(T), fwd, fwdbwd, stream, bytes / stream / 1e6, fwd / stream);
    std::fflush(stdout);
  }
  std::fprintf(stderr, "# sink %g\n", double(sink));
  return 0;
}
