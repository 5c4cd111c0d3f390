// CUDA fused cross-entropy over contiguous (N, V) logits.
// Forward, one warp (V <= 1024) or block per row: one pass for an online
// max and sum of exp (lse = max + log(sum)), a second over the row only
// with label smoothing (sum(x - max), as on the CPU); the row loss goes to a
// per-row f64 buffer and nothing of size V is stored. A single block then
// adds the row losses in a fixed order (f64), counts the valid rows and finds
// the first row whose target is out of range. The launcher synchronises the
// stream once to read that count and verdict: n_valid is a host value, and a
// bad target is a keel::Error naming the row, as on the CPU.
// Backward, one pass per row from the saved lse:
//   dx = (exp(x - lse) - eps/V - (1 - eps)[v == target]) * dloss / n_valid
// with zeros on ignored rows; dloss is read on the device (no host sync).
#include <cmath>

#include "kernels/cross_entropy.h"
#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T, typename I, int kRowThreads>
__global__ void __launch_bounds__(kRowThreads == 32 ? kThreads : kRowThreads)
    ce_rows(const T* x, const I* targets, int64_t N, int64_t V, int64_t ignore_index, float eps,
            float* lse, double* row_loss) {
  constexpr int kBlock = kRowThreads == 32 ? kThreads : kRowThreads;
  constexpr int kRows = kBlock / kRowThreads;
  __shared__ MaxSum smem[kRowThreads / 32];
  __shared__ float smem_f[kRowThreads / 32];
  const int tid = int(threadIdx.x) % kRowThreads;
  for (int64_t rb = int64_t(blockIdx.x) * kRows; rb < N; rb += int64_t(gridDim.x) * kRows) {
    const int64_t r = rb + threadIdx.x / kRowThreads;
    const bool live = r < N;
    const T* xr = x + (live ? r : 0) * V;
    MaxSum st{-INFINITY, 0.0f};
    if (live) for_row(xr, V, tid, kRowThreads, [&](int64_t, float v) { online_add(st, v); });
    st = row_allreduce<kRowThreads>(st, MergeMaxSum{}, smem);
    const float m = st.m;
    // sd = sum(x - m) for label smoothing: shifted values are small, so the
    // f32 sum keeps its precision however large the logits are.
    float sd = 0.0f;
    if (eps > 0.0f) {
      if (live) for_row(xr, V, tid, kRowThreads, [&](int64_t, float v) { sd += v - m; });
      sd = row_allreduce<kRowThreads>(sd, SumOp{}, smem_f);
    }
    if (!live || tid != 0) continue;
    const float log_se = logf(st.s);
    lse[r] = m + log_se;
    const int64_t t = int64_t(targets[r]);
    double l = 0.0;
    if (t != ignore_index && t >= 0 && t < V) {  // a bad target is reported by ce_total
      // lse - (1-eps) x_t - eps mean(x) = log_se + (1-eps)(m - x_t) - eps mean(x - m).
      l = double(log_se) + (1.0 - double(eps)) * (double(m) - double(to_f32(xr[t])));
      if (eps > 0.0f) l -= double(eps) * double(sd) / double(V);
    }
    row_loss[r] = l;
  }
}

struct MinOp {
  __device__ __forceinline__ double operator()(double a, double b) const { return fmin(a, b); }
};

// One block: the mean loss over valid rows (rows added in a fixed order),
// info[0] = valid rows, info[1] = first row with a bad target or -1.
template <typename I>
__global__ void __launch_bounds__(1024)
    ce_total(const double* row_loss, const I* targets, int64_t N, int64_t V, int64_t ignore_index,
             float* loss, int64_t* info) {
  __shared__ double s_loss[32];
  __shared__ double s_valid[32];
  __shared__ double s_bad[32];
  double total = 0.0, valid = 0.0, bad = double(N);
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x) {
    const int64_t t = int64_t(targets[r]);
    if (t == ignore_index) continue;
    if (t < 0 || t >= V) {
      bad = fmin(bad, double(r));
      continue;
    }
    total += row_loss[r];
    valid += 1.0;
  }
  total = block_allreduce<1024>(total, SumOp{}, s_loss);
  valid = block_allreduce<1024>(valid, SumOp{}, s_valid);
  bad = block_allreduce<1024>(bad, MinOp{}, s_bad);
  if (threadIdx.x == 0) {
    const int64_t n_valid = int64_t(valid);
    *loss = n_valid > 0 ? float(total / double(n_valid)) : 0.0f;
    info[0] = n_valid;
    info[1] = bad < double(N) ? int64_t(bad) : -1;
  }
}

__device__ __forceinline__ float load_scalar(const void* p, DType dt) {
  if (dt == DType::BF16) return to_f32(*static_cast<const __nv_bfloat16*>(p));
  if (dt == DType::F16) return to_f32(*static_cast<const __half*>(p));
  return *static_cast<const float*>(p);
}

template <typename T, typename I, int kRowThreads>
__global__ void __launch_bounds__(kRowThreads == 32 ? kThreads : kRowThreads)
    ce_backward_rows(const T* x, const I* targets, const float* lse, int64_t N, int64_t V,
                     int64_t ignore_index, float eps, const void* dloss, DType dloss_dtype,
                     int64_t n_valid, int64_t start, int64_t total, T* dx) {
  constexpr int kBlock = kRowThreads == 32 ? kThreads : kRowThreads;
  constexpr int kRows = kBlock / kRowThreads;
  const int tid = int(threadIdx.x) % kRowThreads;
  const float scale = float(double(load_scalar(dloss, dloss_dtype)) / double(n_valid));
  const float off = eps / float(total);  // the smoothing mass every class gets
  const float hit = 1.0f - eps;
  for (int64_t rb = int64_t(blockIdx.x) * kRows; rb < N; rb += int64_t(gridDim.x) * kRows) {
    const int64_t r = rb + threadIdx.x / kRowThreads;
    if (r >= N) continue;
    const T* xr = x + r * V;
    T* dr = dx + r * V;
    const int64_t t = int64_t(targets[r]);
    if (t == ignore_index) {
      map_row(xr, dr, V, tid, kRowThreads, [](int64_t, float) { return 0.0f; });
      continue;
    }
    const float l = lse[r];
    const int64_t t_local = t - start;  // outside [0, V): another shard's column
    map_row(xr, dr, V, tid, kRowThreads, [=](int64_t i, float v) {
      const float p = expf(v - l) - off;
      return (i == t_local ? p - hit : p) * scale;
    });
  }
}

template <typename T, typename I>
int64_t forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, float eps,
                Tensor& loss, float* lse) {
  const int64_t N = logits.size(0), V = logits.size(1);
  const T* xp = data_ptr<const T>(logits);
  const I* tp = data_ptr<const I>(targets);
  cudaStream_t stream = stream_of(logits);
  Tensor work = scratch(N * int64_t(sizeof(double)) + 2 * int64_t(sizeof(int64_t)),
                        logits.device());  // row losses (N) f64, then info (2) i64
  double* row_loss = data_ptr<double>(work);
  int64_t* info = reinterpret_cast<int64_t*>(row_loss + N);
  if (V <= 1024) {
    const auto blocks = unsigned(std::min<int64_t>((N + 7) / 8, INT32_MAX));
    ce_rows<T, I, 32>
        <<<blocks, kThreads, 0, stream>>>(xp, tp, N, V, ignore_index, eps, lse, row_loss);
  } else {
    const auto blocks = unsigned(std::min<int64_t>(N, INT32_MAX));
    ce_rows<T, I, 512><<<blocks, 512, 0, stream>>>(xp, tp, N, V, ignore_index, eps, lse, row_loss);
  }
  KEEL_CUDA_CHECK(cudaGetLastError());
  ce_total<I>
      <<<1, 1024, 0, stream>>>(row_loss, tp, N, V, ignore_index, data_ptr<float>(loss), info);
  KEEL_CUDA_CHECK(cudaGetLastError());
  int64_t host_info[2] = {0, -1};
  read_back(host_info, info, sizeof(host_info), stream);
  if (host_info[1] >= 0) {
    I v{};
    read_back(&v, tp + host_info[1], sizeof(I), stream);
    KEEL_FAIL("cross_entropy: target ", int64_t(v), " at row ", host_info[1],
              " is out of range [0, V) for V = ", V, " (logits ", logits.describe(),
              ", ignore_index ", ignore_index, ")");
  }
  return host_info[0];
}

template <typename T, typename I>
void backward(const Tensor& logits, const Tensor& targets, const float* lse, int64_t ignore_index,
              float eps, const Tensor& dloss, int64_t n_valid, const ClassShard& shard,
              Tensor& dlogits) {
  const int64_t N = logits.size(0), V = logits.size(1);
  cudaStream_t stream = stream_of(logits);
  const T* xp = data_ptr<const T>(logits);
  const I* tp = data_ptr<const I>(targets);
  T* dp = data_ptr<T>(dlogits);
  if (V <= 1024) {
    const auto blocks = unsigned(std::min<int64_t>((N + 7) / 8, INT32_MAX));
    ce_backward_rows<T, I, 32>
        <<<blocks, kThreads, 0, stream>>>(xp, tp, lse, N, V, ignore_index, eps, dloss.raw_data(),
                                          dloss.dtype(), n_valid, shard.start, shard.total, dp);
  } else {
    const auto blocks = unsigned(std::min<int64_t>(N, INT32_MAX));
    ce_backward_rows<T, I, 512><<<blocks, 512, 0, stream>>>(xp, tp, lse, N, V, ignore_index, eps,
                                                            dloss.raw_data(), dloss.dtype(),
                                                            n_valid, shard.start, shard.total, dp);
  }
  KEEL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

// logits (N, V), targets (N) contiguous; writes loss () and lse (N); returns
// the number of non-ignored rows. Synchronises the stream (see above).
int64_t cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                      float smoothing, Tensor& loss, float* lse) {
  int64_t n_valid = 0;
  KEEL_CUDA_DISPATCH_FLOAT(logits.dtype(), "cross_entropy", {
    KEEL_CUDA_DISPATCH_INDEX(targets.dtype(), "cross_entropy targets", {
      n_valid = forward<T, I>(logits, targets, ignore_index, smoothing, loss, lse);
    });
  });
  return n_valid;
}

// dlogits (N, V) contiguous; dloss a one-element floating tensor on the device.
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const float* lse,
                            int64_t ignore_index, float smoothing, const Tensor& dloss,
                            int64_t n_valid, const ClassShard& shard, Tensor& dlogits) {
  KEEL_CUDA_DISPATCH_FLOAT(logits.dtype(), "cross_entropy backward", {
    KEEL_CUDA_DISPATCH_INDEX(targets.dtype(), "cross_entropy targets", {
      backward<T, I>(logits, targets, lse, ignore_index, smoothing, dloss, n_valid, shard, dlogits);
    });
  });
}

}  // namespace keel::kernels::cuda
