// keel's memory-bound CUDA kernels timed on the device, as GB/s against the
// device's measured copy bandwidth: device-to-device copies (the roofline),
// LayerNorm forward and backward, fused softmax-cross-entropy forward +
// backward, multi-tensor AdamW and the global gradient norm over GPT-2
// 124M's parameter set. The reference is bench/gpu_kernels_torch.py on the
// same sizes; bench/gpu_kernels.sh runs both and prints one table.
//
// Timing: each call is bracketed by two CUDA events on keel's current stream
// after an L2 flush (a memset of --flush-mb MiB, outside the events), so
// every call starts from DRAM and an activation that fits in L2 (a bf16
// (16384, 768) tensor is 25 MB; an H100's L2 is 50 MB) is not served from
// cache. What a call costs on the GPU is counted, including any gap where
// the GPU waits for the host inside the call (keel's cross_entropy forward
// synchronises to read n_valid). The median over --iters calls is reported,
// after --warmup calls that also fill keel's caching allocator.
//
// Bytes are the minimum an op must move (each function below says what it
// counts); both sides use the same count, so keel/torch is a time ratio.
//
// Output: one `device ...` line, then one line per measurement:
//   result kernel=K dtype=D shape=S bytes=N ms=MEDIAN ms_min=MIN gbps=G
// Without CUDA in the build or without a visible device: a message on
// stderr and exit status 2 (a bad argument: 1).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/adamw.h"
#include "kernels/cross_entropy.h"
#include "kernels/layernorm.h"

#ifdef KEEL_WITH_CUDA
#include <cuda_runtime.h>

#include "core/cuda/check.h"
#include "core/cuda/stream.h"
#endif

namespace {

struct Rows {
  int64_t rows = 0, cols = 0;  // (R, C)
};

struct Args {
  int64_t copy_mb = 1024;
  std::vector<Rows> ln = {{16384, 768}, {8192, 4096}};
  std::vector<Rows> ce = {{8192, 50304}};
  std::vector<std::string> dtypes = {"bf16", "f32"};
  // GPT-2 124M: layers, width, context, vocab (50257 padded to 50304).
  int64_t gpt_layers = 12, gpt_width = 768, gpt_ctx = 1024, gpt_vocab = 50304;
  int iters = 50, warmup = 10;
  int64_t flush_mb = 512;
};

[[noreturn]] void usage(const char* prog, const std::string& bad) {
  std::fprintf(stderr,
               "%s: bad argument '%s'\n"
               "usage: %s [--copy-mb N] [--ln RxC,...] [--ce NxV,...] [--dtypes bf16,f32]\n"
               "          [--gpt LAYERS,WIDTH,CTX,VOCAB] [--iters N] [--warmup N] [--flush-mb N]\n"
               "  an empty list (e.g. --ln '') skips that kernel; --flush-mb 0 times warm L2\n",
               prog, bad.c_str(), prog);
  std::exit(1);  // 2 means "no GPU" to bench/gpu_kernels.sh
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, sep)) out.push_back(part);
  return out;
}

int64_t positive(const char* prog, const std::string& s) {
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v <= 0) usage(prog, s);
  return v;
}

int64_t non_negative(const char* prog, const std::string& s) {
  return s == "0" ? 0 : positive(prog, s);
}

std::vector<Rows> parse_shapes(const char* prog, const std::string& s) {
  std::vector<Rows> out;
  for (const std::string& item : split(s, ',')) {
    const std::vector<std::string> rc = split(item, 'x');
    if (rc.size() != 2) usage(prog, item);
    out.push_back({positive(prog, rc[0]), positive(prog, rc[1])});
  }
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(argv[0], k);
    const std::string v = argv[++i];
    if (k == "--copy-mb")
      a.copy_mb = non_negative(argv[0], v);
    else if (k == "--ln")
      a.ln = parse_shapes(argv[0], v);
    else if (k == "--ce")
      a.ce = parse_shapes(argv[0], v);
    else if (k == "--dtypes") {
      a.dtypes = split(v, ',');
      for (const std::string& d : a.dtypes)
        if (d != "bf16" && d != "f32" && d != "f16") usage(argv[0], d);
    } else if (k == "--gpt") {
      const std::vector<std::string> g = split(v, ',');
      if (g.size() != 4) usage(argv[0], v);
      a.gpt_layers = non_negative(argv[0], g[0]);  // 0 layers = skip AdamW and the norm
      a.gpt_width = positive(argv[0], g[1]);
      a.gpt_ctx = positive(argv[0], g[2]);
      a.gpt_vocab = positive(argv[0], g[3]);
    } else if (k == "--iters")
      a.iters = int(positive(argv[0], v));
    else if (k == "--warmup")
      a.warmup = int(non_negative(argv[0], v));
    else if (k == "--flush-mb")
      a.flush_mb = non_negative(argv[0], v);
    else
      usage(argv[0], k);
  }
  return a;
}

#ifdef KEEL_WITH_CUDA

using keel::Device;
using keel::DType;
using keel::Shape;
using keel::Tensor;
namespace kernels = keel::kernels;

DType dtype_of(const std::string& s) {
  if (s == "bf16") return DType::BF16;
  if (s == "f16") return DType::F16;
  return DType::F32;
}

std::string shape_key(const Rows& r) {
  return std::to_string(r.rows) + "x" + std::to_string(r.cols);
}

struct Stats {
  double median_ms = 0, min_ms = 0;
};

// Times `fn` on the device: see the file comment.
class Timer {
 public:
  Timer(Device dev, const Args& a) : dev_(dev), iters_(a.iters), warmup_(a.warmup) {
    if (a.flush_mb > 0) flush_ = keel::empty({a.flush_mb << 20}, DType::U8, dev);  // (bytes)
  }

  Stats run(const std::function<void()>& fn) {
    cudaStream_t s = keel::cuda::current_stream(dev_.index);
    for (int i = 0; i < warmup_; ++i) {
      flush();
      fn();
    }
    std::vector<keel::cuda::Event> start, stop;
    start.reserve(size_t(iters_));
    stop.reserve(size_t(iters_));
    for (int i = 0; i < iters_; ++i) {
      start.emplace_back(true);
      stop.emplace_back(true);
      // A first record creates the event, so creation stays out of the loop.
      start.back().record(s);
      stop.back().record(s);
    }
    KEEL_CUDA_CHECK(cudaStreamSynchronize(s));
    for (int i = 0; i < iters_; ++i) {
      flush();
      start[size_t(i)].record(s);
      fn();
      stop[size_t(i)].record(s);
    }
    KEEL_CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<double> ms;
    for (int i = 0; i < iters_; ++i) ms.push_back(start[size_t(i)].elapsed_ms(stop[size_t(i)]));
    std::sort(ms.begin(), ms.end());
    const size_t n = ms.size();
    const double median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    return {median, ms.front()};
  }

 private:
  void flush() {
    if (flush_.defined()) flush_.zero_();  // a cudaMemsetAsync on the current stream
  }

  Device dev_;
  int iters_, warmup_;
  Tensor flush_;
};

void report(const char* kernel, const std::string& dtype, const std::string& shape, int64_t bytes,
            const Stats& st) {
  const double gbps = double(bytes) / (st.median_ms * 1e-3) / 1e9;
  std::printf("result kernel=%s dtype=%s shape=%s bytes=%lld ms=%.5f ms_min=%.5f gbps=%.1f\n",
              kernel, dtype.c_str(), shape.c_str(), static_cast<long long>(bytes), st.median_ms,
              st.min_ms, gbps);
  std::fflush(stdout);
}

// Copies of copy_mb MiB of f32. Bytes: read + written = 2 x the buffer.
//   memcpy_d2d   cudaMemcpyAsync device to device: the roofline reference.
//   copy_dense   Tensor::copy_ between two dense tensors (keel's 16-byte
//                copy kernel in core/cuda/copy.cu).
//   copy_strided (R, 4096) rows out of a (R, 4224) buffer made contiguous:
//                keel's strided copy kernel (as for a narrowed logits tensor).
void bench_copy(Timer& timer, Device dev, int64_t copy_mb) {
  const int64_t n = (copy_mb << 20) / 4;           // f32 elements
  Tensor src = keel::randn({n}, DType::F32, dev);  // (n)
  Tensor dst = keel::empty({n}, DType::F32, dev);  // (n)
  const std::string shape = std::to_string(n);
  const int64_t bytes = 2 * n * 4;
  cudaStream_t s = keel::cuda::current_stream(dev.index);
  report("memcpy_d2d", "f32", shape, bytes, timer.run([&] {
    KEEL_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), size_t(n) * 4,
                                    cudaMemcpyDeviceToDevice, s));
  }));
  report("copy_dense", "f32", shape, bytes, timer.run([&] { dst.copy_(src); }));
  src = Tensor();
  dst = Tensor();

  constexpr int64_t kCols = 4096, kPad = 128;
  const int64_t rows = std::max<int64_t>(1, n / kCols);
  Tensor wide = keel::randn({rows, kCols + kPad}, DType::F32, dev);  // (R, C + pad)
  const Tensor view = wide.narrow(1, 0, kCols);                      // (R, C), row stride C + pad
  report("copy_strided", "f32", shape_key({rows, kCols}), 2 * rows * kCols * 4,
         timer.run([&] { view.contiguous(); }));  // a fresh (R, C) each call
}

// LayerNorm (R, C), weight and bias f32 (C), eps 1e-5. Bytes, with e the
// activation's element size:
//   forward:  read x (R*C*e), w and b (2*C*4); write y (R*C*e), mean and
//             rstd (2*R*4).
//   backward: read x and dy (2*R*C*e), mean and rstd (2*R*4), w (C*4);
//             write dx (R*C*e), dw and db (2*C*4). The per-slice partial
//             sums keel writes and re-reads for dw/db are not counted.
void bench_layernorm(Timer& timer, Device dev, const Rows& sh, const std::string& dt) {
  const int64_t R = sh.rows, C = sh.cols;
  const DType dtype = dtype_of(dt);
  const int64_t e = int64_t(keel::dtype_size(dtype));
  Tensor x = keel::randn({R, C}, dtype, dev);    // (R, C)
  Tensor dy = keel::randn({R, C}, dtype, dev);   // (R, C)
  Tensor w = keel::randn({C}, DType::F32, dev);  // (C)
  Tensor b = keel::randn({C}, DType::F32, dev);  // (C)
  const double eps = 1e-5;
  report("layernorm_fwd", dt, shape_key(sh), 2 * R * C * e + 2 * C * 4 + 2 * R * 4,
         timer.run([&] { kernels::layernorm(x, w, b, eps); }));
  const kernels::LayerNormOut fwd = kernels::layernorm(x, w, b, eps);
  report("layernorm_bwd", dt, shape_key(sh), 3 * R * C * e + 2 * R * 4 + 3 * C * 4, timer.run([&] {
    kernels::layernorm_backward(dy, x, w, fwd.mean, fwd.rstd, /*has_bias=*/true,
                                /*need_dx=*/true, /*need_dparams=*/true);
  }));
}

// Cross-entropy forward + backward over logits (N, V), i64 targets, mean
// over rows, no ignored rows, no smoothing. Bytes: the minimum for the
// fused pair, read logits once (N*V*e) and write dlogits once (N*V*e), plus
// the targets (N*8). keel's forward and backward are two kernels that each
// read the logits, so they move 3*N*V*e: at this count their ceiling is
// 2/3 of copy bandwidth.
void bench_cross_entropy(Timer& timer, Device dev, const Rows& sh, const std::string& dt) {
  const int64_t N = sh.rows, V = sh.cols;
  const DType dtype = dtype_of(dt);
  const int64_t e = int64_t(keel::dtype_size(dtype));
  Tensor logits = keel::randn({N, V}, dtype, dev);  // (N, V)
  std::mt19937_64 rng(1337);
  std::uniform_int_distribution<int64_t> tok(0, V - 1);
  std::vector<int64_t> t(static_cast<size_t>(N));  // (N)
  for (auto& v : t) v = tok(rng);
  Tensor targets = keel::from_vector(t, {N}, dev);  // (N)
  Tensor dloss = keel::ones({}, DType::F32, dev);   // ()
  const int64_t ignore = -100;
  report("cross_entropy_fwd_bwd", dt, shape_key(sh), 2 * N * V * e + N * 8, timer.run([&] {
    kernels::CrossEntropyOut f = kernels::cross_entropy(logits, targets, ignore, 0.0);
    kernels::cross_entropy_backward(dloss, logits, targets, f.lse, f.n_valid, ignore,
                                    0.0);  // dlogits (N, V), dropped
  }));
}

// GPT-2's parameter shapes (the order of its state dict): wte (V, C), wpe
// (T, C); per layer ln_1 w/b (C), attn qkv (3C, C) + bias, attn proj (C, C)
// + bias, ln_2 w/b, mlp fc (4C, C) + bias, mlp proj (C, 4C) + bias; ln_f w/b.
std::vector<Shape> gpt2_shapes(const Args& a) {
  const int64_t C = a.gpt_width;
  std::vector<Shape> s = {{a.gpt_vocab, C}, {a.gpt_ctx, C}};
  for (int64_t l = 0; l < a.gpt_layers; ++l) {
    const std::vector<Shape> block = {{C}, {C}, {3 * C, C}, {3 * C}, {C, C},     {C},
                                      {C}, {C}, {4 * C, C}, {4 * C}, {C, 4 * C}, {C}};
    s.insert(s.end(), block.begin(), block.end());
  }
  s.push_back({C});
  s.push_back({C});
  return s;
}

// AdamW over the whole parameter set in f32 (param, grad, m, v): lr 6e-4,
// betas 0.9/0.95, eps 1e-8, weight decay 0.1 on every tensor, the step count
// advancing each call. Bytes: read p, g, m, v and write p, m, v = 28 per
// parameter. Then the global gradient norm as trainer::global_grad_norm
// computes it (sum_squares per tensor, each reading its sum back to the
// host, then a sqrt); bytes: read g = 4 per parameter.
void bench_optimizer(Timer& timer, Device dev, const Args& a) {
  std::vector<Tensor> p, g, m, v;
  int64_t n = 0;
  for (const Shape& s : gpt2_shapes(a)) {
    p.push_back(keel::randn(s, DType::F32, dev));
    g.push_back(keel::randn(s, DType::F32, dev));
    m.push_back(keel::zeros(s, DType::F32, dev));
    v.push_back(keel::zeros(s, DType::F32, dev));
    n += keel::shape_numel(s);
  }
  const std::string shape = std::to_string(p.size()) + "t:" + std::to_string(n);
  kernels::AdamWStep hp;
  hp.lr = 6e-4;
  hp.beta1 = 0.9;
  hp.beta2 = 0.95;
  hp.eps = 1e-8;
  hp.weight_decay = 0.1;
  hp.step = 0;
  report("adamw", "f32", shape, 28 * n, timer.run([&] {
    ++hp.step;
    kernels::adamw_step_multi(p, g, m, v, hp);
  }));
  double norm = 0;
  report("grad_norm", "f32", shape, 4 * n, timer.run([&] {
    double total = 0;
    for (const Tensor& t : g) total += kernels::sum_squares(t);
    norm = std::sqrt(total);
  }));
  if (!std::isfinite(norm)) std::fprintf(stderr, "warning: gradient norm %g\n", norm);
}

int run(const Args& a) {
  const Device dev = Device::cuda(0);
  cudaDeviceProp prop{};
  KEEL_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev.index));
  int runtime = 0, driver = 0;
  KEEL_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  KEEL_CUDA_CHECK(cudaDriverGetVersion(&driver));
  std::printf(
      "device name=\"%s\" sms=%d l2_mb=%.1f mem_gb=%.1f cuda_runtime=%d cuda_driver=%d"
      " iters=%d warmup=%d flush_mb=%lld\n",
      prop.name, prop.multiProcessorCount, double(prop.l2CacheSize) / (1 << 20),
      double(prop.totalGlobalMem) / (1 << 30), runtime, driver, a.iters, a.warmup,
      static_cast<long long>(a.flush_mb));
  if (a.flush_mb > 0 && (a.flush_mb << 20) < 2 * int64_t(prop.l2CacheSize))
    std::fprintf(stderr, "warning: --flush-mb %lld is less than twice the L2 (%.1f MiB)\n",
                 static_cast<long long>(a.flush_mb), double(prop.l2CacheSize) / (1 << 20));
  Timer timer(dev, a);
  if (a.copy_mb > 0) bench_copy(timer, dev, a.copy_mb);
  for (const std::string& dt : a.dtypes)
    for (const Rows& sh : a.ln) bench_layernorm(timer, dev, sh, dt);
  for (const std::string& dt : a.dtypes)
    for (const Rows& sh : a.ce) bench_cross_entropy(timer, dev, sh, dt);
  if (a.gpt_layers > 0) bench_optimizer(timer, dev, a);
  return 0;
}

#endif  // KEEL_WITH_CUDA

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
#ifdef KEEL_WITH_CUDA
  if (!keel::cuda_available()) {
    std::fprintf(stderr,
                 "gpu_kernels_bench: no CUDA device is visible (keel::cuda_available() is false;"
                 " check nvidia-smi and CUDA_VISIBLE_DEVICES); nothing measured\n");
    return 2;
  }
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_kernels_bench: %s\n", e.what());
    return 1;
  }
#else
  (void)a;
  std::fprintf(stderr,
               "gpu_kernels_bench: keel was built without CUDA; configure with -DKEEL_CUDA=ON"
               " (needs nvcc) and run on a machine with a GPU; nothing measured\n");
  return 2;
#endif
}
