// CUDA AdamW and sum of squares.
// AdamW is one fused pass per element (gradient scale, both moments, bias
// correction, decoupled weight decay, parameter write), the CPU path's
// formula. Elements go four at a time: 16-byte loads and stores of the f32
// moments, 8 or 16 bytes of the parameter and gradient, when all four
// arrays are aligned; one at a time otherwise.
// Multi-tensor: the (param, grad, m, v, n) of many tensors go to the device
// as one table; every tensor is cut into chunks of kChunk elements, one
// block per chunk, and a block finds its tensor by binary search over the
// table's first-block column. One launch per (param dtype, grad dtype) pair
// updates all of them (usually one launch per optimizer step).
// sum_squares: a fixed number of blocks (a function of n only) each sums a
// contiguous range in f64; one block adds the partials in order. The result
// is the same on every run and is read back to the host (a synchronisation).
#include <cmath>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 16384;  // elements per block: 16 groups of 4 per thread

struct Hyper {
  float b1, b2, step_size, inv_bc2_sqrt, eps, decay, scale;
};

Hyper hyper(const AdamWStep& hp) {
  const float bc1 = float(1.0 - std::pow(hp.beta1, double(hp.step)));
  const float bc2 = float(1.0 - std::pow(hp.beta2, double(hp.step)));
  return Hyper{float(hp.beta1),       float(hp.beta2), float(hp.lr) / bc1,
               1.0f / std::sqrt(bc2), float(hp.eps),   float(1.0 - hp.lr * hp.weight_decay),
               float(hp.grad_scale)};
}

struct Slot {
  void* p;
  const void* g;
  float* m;
  float* v;
  int64_t n;
  int64_t first_block;  // blocks before this tensor's first chunk
};

__device__ __forceinline__ void update(const Hyper& h, float& p, float g, float& m, float& v) {
  const float gi = g * h.scale;
  m = h.b1 * m + (1.0f - h.b1) * gi;
  v = h.b2 * v + (1.0f - h.b2) * gi * gi;
  p = p * h.decay - h.step_size * m / (sqrtf(v) * h.inv_bc2_sqrt + h.eps);
}

// Four consecutive elements as f32: one 8- or 16-byte access.
template <typename T>
__device__ __forceinline__ void load4(const T* p, float (&o)[4]) {
  if constexpr (sizeof(T) == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    o[0] = q.x, o[1] = q.y, o[2] = q.z, o[3] = q.w;
  } else {
    const uint2 q = *reinterpret_cast<const uint2*>(p);
    const T* e = reinterpret_cast<const T*>(&q);
#pragma unroll
    for (int u = 0; u < 4; ++u) o[u] = to_f32(e[u]);
  }
}

template <typename T>
__device__ __forceinline__ void store4(T* p, const float (&o)[4]) {
  if constexpr (sizeof(T) == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(o[0], o[1], o[2], o[3]);
  } else {
    uint2 q;
    T* e = reinterpret_cast<T*>(&q);
#pragma unroll
    for (int u = 0; u < 4; ++u) e[u] = from_f32<T>(o[u]);
    *reinterpret_cast<uint2*>(p) = q;
  }
}

// Elements [start, end) of one tensor.
template <typename P, typename G>
__device__ __forceinline__ void adamw_range(const Hyper& h, P* p, const G* g, float* m, float* v,
                                            int64_t start, int64_t end) {
  const bool vec = aligned16(m + start) && aligned16(v + start) &&
                   (reinterpret_cast<uintptr_t>(p + start) % (4 * sizeof(P))) == 0 &&
                   (reinterpret_cast<uintptr_t>(g + start) % (4 * sizeof(G))) == 0;
  int64_t i = start;
  if (vec) {
    const int64_t groups = (end - start) / 4;
    for (int64_t q = threadIdx.x; q < groups; q += blockDim.x) {
      const int64_t e = start + q * 4;
      float pp[4], gg[4], mm[4], vv[4];
      load4(p + e, pp);
      load4(g + e, gg);
      load4(m + e, mm);
      load4(v + e, vv);
#pragma unroll
      for (int u = 0; u < 4; ++u) update(h, pp[u], gg[u], mm[u], vv[u]);
      store4(p + e, pp);
      store4(m + e, mm);
      store4(v + e, vv);
    }
    i = start + groups * 4;
  }
  for (int64_t e = i + threadIdx.x; e < end; e += blockDim.x) {
    float pp = to_f32(p[e]), mm = m[e], vv = v[e];
    update(h, pp, to_f32(g[e]), mm, vv);
    p[e] = from_f32<P>(pp);
    m[e] = mm;
    v[e] = vv;
  }
}

// One block per chunk. With a table, the block's tensor is found by binary
// search; without, every block belongs to `one`.
template <typename P, typename G, bool kTable>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(const Slot* table, int slots, Slot one, Hyper h) {
  Slot s = one;
  if constexpr (kTable) {
    int lo = 0, hi = slots - 1;  // the last slot whose first_block <= blockIdx.x
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (table[mid].first_block <= int64_t(blockIdx.x))
        lo = mid;
      else
        hi = mid - 1;
    }
    s = table[lo];
  }
  const int64_t start = (int64_t(blockIdx.x) - s.first_block) * kChunk;
  const int64_t end = min(s.n, start + kChunk);
  adamw_range(h, static_cast<P*>(s.p), static_cast<const G*>(s.g), s.m, s.v, start, end);
}

template <typename F>
void dispatch_pair(DType p, DType g, F&& f) {
  KEEL_CUDA_DISPATCH_FLOAT(p, "adamw param", {
    using PT = T;
    KEEL_CUDA_DISPATCH_FLOAT(g, "adamw grad", f(PT{}, T{}));
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sum_squares_partials(const T* x, int64_t n, int64_t per_block, double* partial) {
  __shared__ double smem[kThreads / 32];
  const int64_t start = int64_t(blockIdx.x) * per_block;
  const int64_t end = min(n, start + per_block), len = end > start ? end - start : 0;
  double acc = 0.0;
  for_row(x + start, len, int(threadIdx.x), kThreads,
          [&](int64_t, float v) { acc += double(v) * double(v); });
  acc = block_allreduce<kThreads>(acc, SumOp{}, smem);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void __launch_bounds__(1024)
    sum_partials(const double* partial, int count, double* out) {
  __shared__ double smem[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = block_allreduce<1024>(acc, SumOp{}, smem);
  if (threadIdx.x == 0) *out = acc;
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& hp) {
  const int64_t n = param.numel();
  if (n == 0) return;
  const Hyper h = hyper(hp);
  const Slot one{param.raw_data(), grad.raw_data(), data_ptr<float>(m), data_ptr<float>(v), n, 0};
  const int64_t blocks = (n + kChunk - 1) / kChunk;
  cudaStream_t stream = stream_of(param);
  dispatch_pair(param.dtype(), grad.dtype(), [&](auto pt, auto gt) {
    using P = decltype(pt);
    using G = decltype(gt);
    adamw_kernel<P, G, false><<<unsigned(blocks), kThreads, 0, stream>>>(nullptr, 1, one, h);
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

void adamw_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                      const AdamWStep& hp) {
  if (params.empty()) return;
  const Hyper h = hyper(hp);
  const Device dev = params[0].device();
  cudaStream_t stream = stream_of(params[0]);
  // One table per (param dtype, grad dtype) pair present.
  const DType kinds[3] = {DType::F32, DType::BF16, DType::F16};
  for (DType pd : kinds) {
    for (DType gd : kinds) {
      std::vector<Slot> table;
      int64_t blocks = 0;
      for (size_t i = 0; i < params.size(); ++i) {
        if (params[i].dtype() != pd || grads[i].dtype() != gd || params[i].numel() == 0) continue;
        const int64_t n = params[i].numel();
        table.push_back(Slot{params[i].raw_data(), grads[i].raw_data(), data_ptr<float>(m[i]),
                             data_ptr<float>(v[i]), n, blocks});
        blocks += (n + kChunk - 1) / kChunk;
      }
      if (table.empty()) continue;
      KEEL_CHECK(blocks <= int64_t(INT32_MAX), "adamw_step_multi: ", blocks,
                 " chunks exceed one launch");
      const size_t bytes = table.size() * sizeof(Slot);
      Tensor dtab = scratch(int64_t(bytes), dev);  // the table on the device
      // From pageable memory: the call returns once `table` is staged, so it
      // may go out of scope before the copy lands; the kernel is ordered after.
      KEEL_CUDA_CHECK(
          cudaMemcpyAsync(dtab.raw_data(), table.data(), bytes, cudaMemcpyHostToDevice, stream));
      dispatch_pair(pd, gd, [&](auto pt, auto gt) {
        using P = decltype(pt);
        using G = decltype(gt);
        adamw_kernel<P, G, true><<<unsigned(blocks), kThreads, 0, stream>>>(
            data_ptr<const Slot>(dtab), int(table.size()), table[0], h);
      });
      KEEL_CUDA_CHECK(cudaGetLastError());
    }
  }
}

namespace {

// Partials depend only on n: up to 1024 blocks of at least 16 elements per thread.
int64_t partial_blocks(int64_t n) {
  return std::clamp<int64_t>((n + kThreads * 16 - 1) / (kThreads * 16), 1, 1024);
}

// Launches x's block partials into partial[0, partial_blocks(n)).
void launch_partials(const Tensor& x, double* partial, cudaStream_t stream) {
  const int64_t n = x.numel(), blocks = partial_blocks(n);
  const int64_t per_block = (n + blocks - 1) / blocks;
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "sum_squares", {
    sum_squares_partials<T>
        <<<unsigned(blocks), kThreads, 0, stream>>>(data_ptr<const T>(x), n, per_block, partial);
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

// Adds partial[0, count) in one block into partial[count] and reads it back.
double total_of(double* partial, int64_t count, cudaStream_t stream) {
  KEEL_CHECK(count <= int64_t(INT32_MAX), "sum_squares: ", count, " partial sums exceed an int");
  sum_partials<<<1, 1024, 0, stream>>>(partial, int(count), partial + count);
  KEEL_CUDA_CHECK(cudaGetLastError());
  double out = 0.0;
  read_back(&out, partial + count, sizeof(double), stream);
  return out;
}

}  // namespace

double sum_squares(const Tensor& x) {
  if (x.numel() == 0) return 0.0;
  return sum_squares_multi({x});
}

double sum_squares_multi(const std::vector<Tensor>& xs) {
  int64_t count = 0;
  for (const Tensor& x : xs)
    if (x.numel() > 0) count += partial_blocks(x.numel());
  if (count == 0) return 0.0;
  cudaStream_t stream = stream_of(xs[0]);
  Tensor work = scratch((count + 1) * int64_t(sizeof(double)), xs[0].device());  // partials, total
  double* partial = data_ptr<double>(work);
  int64_t at = 0;
  for (const Tensor& x : xs) {
    if (x.numel() == 0) continue;
    launch_partials(x, partial + at, stream);
    at += partial_blocks(x.numel());
  }
  return total_of(partial, count, stream);
}

}  // namespace keel::kernels::cuda
