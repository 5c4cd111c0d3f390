// CUDA reductions: sum (and mean, a scaled sum), var (Welford, merged with
// Chan's formula) and max with its index, over any set of dims. x is viewed
// as (kept, reduced), each side's dims merged where contiguous. Two kernels:
//   - inner: one warp (short rows) or one 256-thread block per kept element,
//     the threads striding along the reduced dims; warp shuffles, then
//     shared memory across warps;
//   - outer: when the kept dims end in a contiguous run (a bias gradient
//     summed over rows), a block covers 32 neighbouring kept elements with
//     8 lanes down the reduced range, so each warp reads 32 consecutive
//     elements; the reduced offsets of a tile are computed once per block.
// Long reductions over few outputs are cut into segments along the reduced
// range (grid.y); segments write partial states and a second kernel merges
// them in segment order. The launch shape depends only on the tensor's
// shape, and every merge happens in a fixed order, so results are the same
// on every run. Sums accumulate in f64, as on the CPU.
#include <cmath>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/reduce.h"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;
// Enough blocks to fill an H100 several times over before splitting rows.
constexpr int64_t kTargetBlocks = 512;

struct SumReduce {
  using State = double;
  double scale;
  __device__ State init() const { return 0.0; }
  __device__ void add(State& s, float v, int64_t) const { s += double(v); }
  __device__ State merge(State a, State b) const { return a + b; }
  __device__ static State shfl(State s, int o) { return __shfl_xor_sync(0xffffffffu, s, o); }
  template <typename T>
  __device__ void store(const State& s, int64_t, int64_t k, T* out, int64_t*) const {
    out[k] = from_f32<T>(float(s * scale));
  }
};

struct WelfordState {
  double n, mean, m2;
};

struct VarReduce {
  using State = WelfordState;
  int64_t correction;
  __device__ State init() const { return {0.0, 0.0, 0.0}; }
  __device__ void add(State& s, float v, int64_t) const {
    s.n += 1.0;
    const double d = double(v) - s.mean;
    s.mean += d / s.n;
    s.m2 += d * (double(v) - s.mean);
  }
  __device__ State merge(const State& a, const State& b) const {
    if (b.n == 0.0) return a;
    if (a.n == 0.0) return b;
    const double n = a.n + b.n, d = b.mean - a.mean;
    return {n, a.mean + d * (b.n / n), a.m2 + b.m2 + d * d * (a.n * b.n / n)};
  }
  __device__ static State shfl(const State& s, int o) {
    return {__shfl_xor_sync(0xffffffffu, s.n, o), __shfl_xor_sync(0xffffffffu, s.mean, o),
            __shfl_xor_sync(0xffffffffu, s.m2, o)};
  }
  template <typename T>
  __device__ void store(const State& s, int64_t red, int64_t k, T* out, int64_t*) const {
    const int64_t denom = red - correction;
    out[k] = from_f32<T>(denom > 0 ? float(s.m2 / double(denom)) : __int_as_float(0x7fc00000));
  }
};

struct ArgMax {
  float v;
  int64_t i;  // -1: no element yet
};

// Max with the CPU's rule: a NaN wins and stays, ties go to the first index.
// As a total order on (value, index) it merges in any order to one answer.
struct MaxReduce {
  using State = ArgMax;
  __device__ State init() const { return {0.0f, -1}; }
  __device__ State merge(const State& a, const State& b) const {
    if (a.i < 0) return b;
    if (b.i < 0) return a;
    const bool an = isnan(a.v), bn = isnan(b.v);
    if (an || bn) {
      if (an && bn) return a.i < b.i ? a : b;
      return an ? a : b;
    }
    if (a.v != b.v) return a.v > b.v ? a : b;
    return a.i < b.i ? a : b;
  }
  __device__ void add(State& s, float v, int64_t r) const { s = merge(s, State{v, r}); }
  __device__ static State shfl(const State& s, int o) {
    return {__shfl_xor_sync(0xffffffffu, s.v, o),
            (int64_t)__shfl_xor_sync(0xffffffffu, (long long)s.i, o)};
  }
  template <typename T>
  __device__ void store(const State& s, int64_t, int64_t k, T* out, int64_t* idx) const {
    out[k] = from_f32<T>(s.v);
    idx[k] = s.i;
  }
};

template <typename Op, typename S>
__device__ __forceinline__ S warp_merge(const Op& op, S s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s = op.merge(s, Op::shfl(s, o));
  return s;
}

// kRowThreads threads (a warp or the whole block) reduce one kept element's
// segment [seg * seg_len, (seg + 1) * seg_len) of the reduced range.
template <typename T, typename Op, int kRowThreads, typename Idx>
__global__ void __launch_bounds__(kThreads)
    reduce_inner(const T* x, Layout<1> Lk, Layout<1> Lr, int64_t kept, int64_t red, int64_t seg_len,
                 Op op, typename Op::State* partial, T* out, int64_t* idx) {
  using S = typename Op::State;
  constexpr int kRows = kThreads / kRowThreads;
  __shared__ S smem[kThreads / 32];
  const int lane = int(threadIdx.x) % kRowThreads;
  const int64_t seg = blockIdx.y;
  const int64_t r0 = seg * seg_len, r1 = min(red, r0 + seg_len);
  for (int64_t kb = int64_t(blockIdx.x) * kRows; kb < kept; kb += int64_t(gridDim.x) * kRows) {
    const int64_t k = kb + int64_t(threadIdx.x) / kRowThreads;
    S s = op.init();
    if (k < kept) {
      int64_t ko[1];
      layout_offsets<1>(Lk, Idx(k), ko);
      const T* base = x + ko[0];
      for (int64_t r = r0 + lane; r < r1; r += kRowThreads) {
        int64_t ro[1];
        layout_offsets<1>(Lr, Idx(r), ro);
        op.add(s, to_f32(base[ro[0]]), r);
      }
    }
    s = warp_merge(op, s);
    if constexpr (kRowThreads > 32) {
      __syncthreads();  // smem is reused on the next kept element
      if (threadIdx.x % 32 == 0) smem[threadIdx.x / 32] = s;
      __syncthreads();
      if (threadIdx.x == 0) {
        s = smem[0];
#pragma unroll
        for (int w = 1; w < kThreads / 32; ++w) s = op.merge(s, smem[w]);
      }
    }
    if (lane == 0 && k < kept) {
      if (partial)
        partial[seg * kept + k] = s;
      else
        op.store(s, red, k, out, idx);
    }
  }
}

// Kept dims end in a contiguous run: block = 32 kept elements x 8 lanes
// down one segment of the reduced range.
template <typename T, typename Op, typename Idx>
__global__ void __launch_bounds__(kThreads)
    reduce_outer(const T* x, Layout<1> Lk, Layout<1> Lr, int64_t kept, int64_t red, int64_t seg_len,
                 Op op, typename Op::State* partial, T* out, int64_t* idx) {
  using S = typename Op::State;
  constexpr int kLanes = kThreads / 32;
  __shared__ int64_t roff[kThreads];
  __shared__ S acc[kLanes][32];
  const int lk = int(threadIdx.x) % 32, lr = int(threadIdx.x) / 32;
  const int64_t k = int64_t(blockIdx.x) * 32 + lk;
  const int64_t seg = blockIdx.y;
  const int64_t r0 = seg * seg_len, r1 = min(red, r0 + seg_len);
  int64_t ko[1] = {0};
  if (k < kept) layout_offsets<1>(Lk, Idx(k), ko);
  S s = op.init();
  for (int64_t t0 = r0; t0 < r1; t0 += kThreads) {
    __syncthreads();  // the previous tile's offsets are no longer read
    if (t0 + threadIdx.x < r1) {
      int64_t ro[1];
      layout_offsets<1>(Lr, Idx(t0 + threadIdx.x), ro);
      roff[threadIdx.x] = ro[0];
    }
    __syncthreads();
    const int tn = int(min(int64_t(kThreads), r1 - t0));
    if (k < kept)
      for (int t = lr; t < tn; t += kLanes) op.add(s, to_f32(x[ko[0] + roff[t]]), t0 + t);
  }
  acc[lr][lk] = s;
  __syncthreads();
  if (lr == 0 && k < kept) {
    S r = acc[0][lk];
#pragma unroll
    for (int j = 1; j < kLanes; ++j) r = op.merge(r, acc[j][lk]);
    if (partial)
      partial[seg * kept + k] = r;
    else
      op.store(r, red, k, out, idx);
  }
}

// Merges each kept element's segment partials in segment order.
template <typename T, typename Op>
__global__ void __launch_bounds__(kThreads)
    reduce_finish(const typename Op::State* partial, int64_t kept, int64_t segs, int64_t red, Op op,
                  T* out, int64_t* idx) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < kept; k += step) {
    typename Op::State s = partial[k];
    for (int64_t g = 1; g < segs; ++g) s = op.merge(s, partial[g * kept + k]);
    op.store(s, red, k, out, idx);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Segments along the reduced range so that about kTargetBlocks blocks run,
// each segment at least `min_len` long; at most 65535 (grid.y).
int64_t segments_for(int64_t base_blocks, int64_t red, int64_t min_len) {
  if (base_blocks >= kTargetBlocks) return 1;
  const int64_t want = ceil_div(kTargetBlocks, base_blocks);
  return std::clamp<int64_t>(std::min(want, red / min_len), 1, 65535);
}

template <typename T, typename Op>
void run_reduce(const Tensor& x, const std::vector<int64_t>& rdims, Op op, T* out, int64_t* idx) {
  using S = typename Op::State;
  Shape ks, kst, rs, rst;
  int64_t kept = 1, red = 1;
  std::vector<bool> is_red(size_t(x.dim()), false);
  for (int64_t d : rdims) is_red[size_t(d)] = true;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (is_red[size_t(d)]) {
      rs.push_back(x.size(d));
      rst.push_back(x.stride(d));
      red *= x.size(d);
    } else {
      ks.push_back(x.size(d));
      kst.push_back(x.stride(d));
      kept *= x.size(d);
    }
  }
  if (kept == 0) return;
  const Layout<1> Lk = make_layout<1>(ks, {kst});
  const Layout<1> Lr = make_layout<1>(rs, {rst});
  const T* xp = data_ptr<const T>(x);
  const int dev = x.device().index;
  cudaStream_t stream = stream_of(x);
  const bool small_idx = kept <= int64_t(INT32_MAX) && red <= int64_t(INT32_MAX);
  const int inner_nd = Lk.ndim - 1;
  const bool outer = Lk.strides[0][inner_nd] == 1 && Lk.sizes[inner_nd] >= 16 && red > 1;

  int64_t segs = 1;
  Tensor work;  // (segs, kept) partial states when a row is split
  S* partial = nullptr;
  auto make_partials = [&] {
    if (segs == 1) return;
    work = scratch(segs * kept * int64_t(sizeof(S)), x.device());
    partial = data_ptr<S>(work);
  };

  if (outer) {
    const int64_t col_blocks = ceil_div(kept, 32);
    segs = segments_for(col_blocks, red, 1024);
    const int64_t seg_len = ceil_div(red, segs);
    make_partials();
    const dim3 grid{unsigned(col_blocks), unsigned(segs)};
    if (small_idx)
      reduce_outer<T, Op, uint32_t>
          <<<grid, kThreads, 0, stream>>>(xp, Lk, Lr, kept, red, seg_len, op, partial, out, idx);
    else
      reduce_outer<T, Op, uint64_t>
          <<<grid, kThreads, 0, stream>>>(xp, Lk, Lr, kept, red, seg_len, op, partial, out, idx);
    KEEL_CUDA_CHECK(cudaGetLastError());
  } else if (red <= 512) {  // short rows: a warp each, 8 per block
    const int64_t blocks = std::min<int64_t>(ceil_div(kept, kThreads / 32), INT32_MAX);
    if (small_idx)
      reduce_inner<T, Op, 32, uint32_t><<<unsigned(blocks), kThreads, 0, stream>>>(
          xp, Lk, Lr, kept, red, red, op, nullptr, out, idx);
    else
      reduce_inner<T, Op, 32, uint64_t><<<unsigned(blocks), kThreads, 0, stream>>>(
          xp, Lk, Lr, kept, red, red, op, nullptr, out, idx);
    KEEL_CUDA_CHECK(cudaGetLastError());
  } else {  // long rows: a block each, split into segments when there are few rows
    segs = segments_for(kept, red, 4096);
    const int64_t seg_len = ceil_div(red, segs);
    make_partials();
    const dim3 grid{unsigned(std::min<int64_t>(kept, INT32_MAX)), unsigned(segs)};
    if (small_idx)
      reduce_inner<T, Op, kThreads, uint32_t>
          <<<grid, kThreads, 0, stream>>>(xp, Lk, Lr, kept, red, seg_len, op, partial, out, idx);
    else
      reduce_inner<T, Op, kThreads, uint64_t>
          <<<grid, kThreads, 0, stream>>>(xp, Lk, Lr, kept, red, seg_len, op, partial, out, idx);
    KEEL_CUDA_CHECK(cudaGetLastError());
  }
  if (segs > 1) {
    reduce_finish<T, Op><<<grid_for(kept, kThreads, dev), kThreads, 0, stream>>>(
        partial, kept, segs, red, op, out, idx);
    KEEL_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace

void sum(const Tensor& x, const std::vector<int64_t>& rdims, double scale, Tensor& out) {
  KEEL_CUDA_DISPATCH_FLOAT(x.dtype(), "sum",
                           run_reduce<T>(x, rdims, SumReduce{scale}, data_ptr<T>(out), nullptr));
}

void var(const Tensor& x, const std::vector<int64_t>& rdims, int64_t correction, Tensor& out) {
  KEEL_CUDA_DISPATCH_FLOAT(
      x.dtype(), "var", run_reduce<T>(x, rdims, VarReduce{correction}, data_ptr<T>(out), nullptr));
}

void max(const Tensor& x, int64_t dim, Tensor& values, Tensor& indices) {
  KEEL_CUDA_DISPATCH_FLOAT(
      x.dtype(), "max",
      run_reduce<T>(x, {dim}, MaxReduce{}, data_ptr<T>(values), data_ptr<int64_t>(indices)));
}

}  // namespace keel::kernels::cuda
