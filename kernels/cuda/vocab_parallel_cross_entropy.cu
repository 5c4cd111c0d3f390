// CUDA parts of the vocabulary-parallel loss (kernels/vocab_parallel_cross_entropy.h).
// The local pass is one warp (Vl <= 1024) or block per row with an online
// max and sum of exp, plus a second pass over the row only with label
// smoothing, as the serial kernel (kernels/cuda/cross_entropy.cu). The
// count, the rescale and the finish are O(N): one block for the counts and
// the loss (rows added in a fixed order, f64), a grid for the rescale.
// vocab_ce_count_valid synchronises the stream to read its verdict.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/vocab_parallel_cross_entropy.h"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;

struct MinOp {
  __device__ __forceinline__ double operator()(double a, double b) const { return fmin(a, b); }
};

// info[0] = valid rows, info[1] = first row with a bad target or -1.
template <typename I>
__global__ void __launch_bounds__(1024)
    count_valid(const I* targets, int64_t N, int64_t V, int64_t ignore_index, int64_t* info) {
  __shared__ double s_valid[32];
  __shared__ double s_bad[32];
  double valid = 0.0, bad = double(N);
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x) {
    const int64_t t = int64_t(targets[r]);
    if (t == ignore_index) continue;
    if (t < 0 || t >= V)
      bad = fmin(bad, double(r));
    else
      valid += 1.0;
  }
  valid = block_allreduce<1024>(valid, SumOp{}, s_valid);
  bad = block_allreduce<1024>(bad, MinOp{}, s_bad);
  if (threadIdx.x == 0) {
    info[0] = int64_t(valid);
    info[1] = bad < double(N) ? int64_t(bad) : -1;
  }
}

// local (k + 1, N): m | se | xt | sd, zeroed by the launcher.
template <typename T, typename I, int kRowThreads>
__global__ void __launch_bounds__(kRowThreads == 32 ? kThreads : kRowThreads)
    local_rows(const T* x, const I* targets, int64_t N, int64_t Vl, int64_t ignore_index,
               int64_t start, bool smoothing, float* maxes, float* local) {
  constexpr int kBlock = kRowThreads == 32 ? kThreads : kRowThreads;
  constexpr int kRows = kBlock / kRowThreads;
  __shared__ MaxSum smem[kRowThreads / 32];
  __shared__ float smem_f[kRowThreads / 32];
  const int tid = int(threadIdx.x) % kRowThreads;
  for (int64_t rb = int64_t(blockIdx.x) * kRows; rb < N; rb += int64_t(gridDim.x) * kRows) {
    const int64_t r = rb + threadIdx.x / kRowThreads;
    const bool live = r < N && int64_t(targets[r < N ? r : 0]) != ignore_index;
    const T* xr = x + (r < N ? r : 0) * Vl;
    MaxSum st{-INFINITY, 0.0f};
    if (live)
      for_row(xr, Vl, tid, kRowThreads, [&](int64_t, float v) { online_add(st, v); });
    st = row_allreduce<kRowThreads>(st, MergeMaxSum{}, smem);
    // A shard of masked (padding) classes only: x - m would be NaN; the sum
    // of x - M over it is -inf, as in the serial op.
    const bool masked = st.m == -INFINITY;
    float sd = 0.0f;
    if (smoothing && !masked) {
      if (live) for_row(xr, Vl, tid, kRowThreads, [&](int64_t, float v) { sd += v - st.m; });
      sd = row_allreduce<kRowThreads>(sd, SumOp{}, smem_f);
    }
    if (r >= N || tid != 0) continue;
    if (!live) {
      maxes[r] = 0.0f;
      continue;
    }
    maxes[r] = st.m;
    local[r] = st.m;
    local[N + r] = masked ? 0.0f : st.s;
    const int64_t t = int64_t(targets[r]);
    if (t >= start && t < start + Vl) local[2 * N + r] = to_f32(xr[t - start]);
    if (smoothing) local[3 * N + r] = masked ? -INFINITY : sd;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    maxes[N] = float(Vl);
    maxes[N + 1] = -float(Vl);
  }
}

__global__ void __launch_bounds__(kThreads)
    rescale_rows(const float* local, const float* M, int64_t N, int64_t Vl, bool smoothing,
                 float* sums) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < N; r += step) {
    const float shift = local[r] - M[r];  // <= 0; ignored rows: 0 - 0 with zero sums
    sums[r] = rescale(local[N + r], local[r], M[r]);
    sums[N + r] = local[2 * N + r];
    if (smoothing) sums[2 * N + r] = local[3 * N + r] + float(Vl) * shift;
  }
}

template <typename I>
__global__ void __launch_bounds__(1024)
    finish_rows(const float* M, const float* sums, const I* targets, int64_t N, int64_t V,
                int64_t ignore_index, float eps, int64_t n_valid, float* loss, float* lse) {
  __shared__ double s_loss[32];
  const float* se = sums;
  const float* xt = sums + N;
  const float* sd = sums + 2 * N;
  double total = 0.0;
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x) {
    if (int64_t(targets[r]) == ignore_index) continue;
    const float log_se = logf(se[r]);
    lse[r] = M[r] + log_se;
    double l = double(log_se) + (1.0 - double(eps)) * (double(M[r]) - double(xt[r]));
    if (eps > 0.0f) l -= double(eps) * double(sd[r]) / double(V);
    total += l;
  }
  total = block_allreduce<1024>(total, SumOp{}, s_loss);
  if (threadIdx.x == 0) *loss = float(total / double(n_valid));
}

}  // namespace

int64_t vocab_ce_count_valid(const char* op, const Tensor& targets, int64_t ignore_index,
                             int64_t V) {
  const int64_t N = targets.numel();
  if (N == 0) return 0;
  cudaStream_t stream = stream_of(targets);
  Tensor work = scratch(2 * int64_t(sizeof(int64_t)), targets.device());  // info (2) i64
  int64_t* info = data_ptr<int64_t>(work);
  KEEL_CUDA_DISPATCH_INDEX(targets.dtype(), op, {
    count_valid<I><<<1, 1024, 0, stream>>>(data_ptr<const I>(targets), N, V, ignore_index, info);
    KEEL_CUDA_CHECK(cudaGetLastError());
    int64_t host[2] = {0, -1};
    read_back(host, info, sizeof(host), stream);
    if (host[1] >= 0) {
      I v{};
      read_back(&v, data_ptr<const I>(targets) + host[1], sizeof(I), stream);
      KEEL_FAIL(op, ": target ", int64_t(v), " at row ", host[1],
                " is out of range [0, V) for V = ", V, " (ignore_index ", ignore_index, ")");
    }
    return host[0];
  });
  return 0;
}

void vocab_ce_local(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                    int64_t start, VocabShardStats& out) {
  const int64_t N = logits.size(0), Vl = logits.size(1);
  if (N == 0) return;
  cudaStream_t stream = stream_of(logits);
  const bool smoothing = out.local.size(0) == 4;
  float* maxes = data_ptr<float>(out.maxes);
  float* local = data_ptr<float>(out.local);
  KEEL_CUDA_DISPATCH_FLOAT(logits.dtype(), "vocab_parallel_cross_entropy", {
    KEEL_CUDA_DISPATCH_INDEX(targets.dtype(), "vocab_parallel_cross_entropy targets", {
      const T* xp = data_ptr<const T>(logits);
      const I* tp = data_ptr<const I>(targets);
      if (Vl <= 1024) {
        const auto blocks = unsigned(std::min<int64_t>((N + 7) / 8, INT32_MAX));
        local_rows<T, I, 32><<<blocks, kThreads, 0, stream>>>(xp, tp, N, Vl, ignore_index, start,
                                                              smoothing, maxes, local);
      } else {
        const auto blocks = unsigned(std::min<int64_t>(N, INT32_MAX));
        local_rows<T, I, 512><<<blocks, 512, 0, stream>>>(xp, tp, N, Vl, ignore_index, start,
                                                          smoothing, maxes, local);
      }
    });
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

void vocab_ce_rescale(const Tensor& local, const Tensor& global_maxes, int64_t Vl, Tensor& sums) {
  const int64_t N = local.size(1);
  if (N == 0) return;
  const unsigned grid = grid_for(N, kThreads, local.device().index);
  rescale_rows<<<grid, kThreads, 0, stream_of(local)>>>(data_ptr<const float>(local),
                                                        data_ptr<const float>(global_maxes), N,
                                                        Vl, local.size(0) == 4,
                                                        data_ptr<float>(sums));
  KEEL_CUDA_CHECK(cudaGetLastError());
}

void vocab_ce_finish(const Tensor& global_maxes, const Tensor& sums, const Tensor& targets,
                     int64_t ignore_index, int64_t V, int64_t n_valid, float eps,
                     VocabCeOut& out) {
  const int64_t N = targets.numel();
  cudaStream_t stream = stream_of(sums);
  KEEL_CUDA_DISPATCH_INDEX(targets.dtype(), "vocab_parallel_cross_entropy targets", {
    finish_rows<I><<<1, 1024, 0, stream>>>(
        data_ptr<const float>(global_maxes), data_ptr<const float>(sums),
        data_ptr<const I>(targets), N, V, ignore_index, eps, n_valid, data_ptr<float>(out.loss),
        data_ptr<float>(out.lse));
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace keel::kernels::cuda
