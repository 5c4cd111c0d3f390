// CUDA indexing kernels, with the CPU path's semantics (kernels/index.h):
//   - check_index_range: every index value is tested on the device; the
//     first bad position (an atomicMin, so the answer does not depend on
//     timing) is read back after a stream synchronisation and reported with
//     the CPU's message;
//   - gather: one thread per index position, any strides, any dtype (moved
//     as raw bits of its size);
//   - scatter_add: deterministic without atomics, as on the CPU: a thread
//     owns the positions off `dim` (which address distinct elements of out)
//     and walks `dim` in order. bf16/f16 out is accumulated in an f32 copy
//     and rounded once;
//   - concat: one strided copy per input into its slice of out.
#include <climits>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;

template <typename I>
__global__ void __launch_bounds__(kThreads)
    find_bad_index(const I* p, Layout<1> L, int64_t n, int64_t bound, unsigned long long* first) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[1];
    layout_offsets<1>(L, uint64_t(i), off);
    const int64_t v = int64_t(p[off[0]]);
    if (v < 0 || v >= bound) atomicMin(first, (unsigned long long)i);
  }
}

template <typename E, typename I>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(E* out, const I* index, const E* x, Layout<3> L, int64_t xd, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[3];
    layout_offsets<3>(L, uint64_t(i), off);
    out[off[0]] = x[off[2] + int64_t(index[off[1]]) * xd];
  }
}

// One thread per position off `dim`; each walks `dim` in order.
template <typename I>
__global__ void __launch_bounds__(kThreads)
    scatter_add_kernel(float* out, const I* index, const float* src, Layout<3> L, int64_t n,
                       int64_t len, int64_t od, int64_t id, int64_t sd) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < n; p += step) {
    int64_t off[3];
    layout_offsets<3>(L, uint64_t(p), off);
    for (int64_t l = 0; l < len; ++l)
      out[off[0] + int64_t(index[off[1] + l * id]) * od] += src[off[2] + l * sd];
  }
}

template <typename E>
__global__ void __launch_bounds__(kThreads)
    copy_kernel(E* dst, const E* src, Layout<2> L, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[2];
    layout_offsets<2>(L, uint64_t(i), off);
    dst[off[0]] = src[off[1]];
  }
}

template <typename D, typename S>
__global__ void __launch_bounds__(kThreads)
    convert_kernel(D* dst, const S* src, Layout<2> L, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[2];
    layout_offsets<2>(L, uint64_t(i), off);
    dst[off[0]] = from_f32<D>(to_f32(src[off[1]]));
  }
}

// dst = src elementwise (same shape, any strides), floating dtypes converted.
void convert(const Tensor& src, Tensor& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const Layout<2> L = make_layout<2>(dst.sizes(), {dst.strides(), src.strides()});
  const unsigned grid = grid_for(n, kThreads, dst.device().index);
  cudaStream_t stream = stream_of(dst);
  KEEL_CUDA_DISPATCH_FLOAT(dst.dtype(), "scatter_add_", {
    using DT = T;
    KEEL_CUDA_DISPATCH_FLOAT(src.dtype(), "scatter_add_", {
      convert_kernel<DT, T>
          <<<grid, kThreads, 0, stream>>>(data_ptr<DT>(dst), data_ptr<const T>(src), L, n);
    });
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

// out (f32) += src (f32) at index along dim.
void scatter_add_f32(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  Shape sizes;
  std::array<Shape, 3> st;  // out, index, src strides off dim
  for (int64_t k = 0; k < index.dim(); ++k) {
    if (k == dim) continue;
    sizes.push_back(index.size(k));
    st[0].push_back(out.stride(k));
    st[1].push_back(index.stride(k));
    st[2].push_back(src.stride(k));
  }
  const int64_t len = index.size(dim), n = shape_numel(sizes);
  if (len == 0 || n == 0) return;
  const Layout<3> L = make_layout<3>(sizes, st);
  const unsigned grid = grid_for(n, kThreads, out.device().index);
  cudaStream_t stream = stream_of(out);
  KEEL_CUDA_DISPATCH_INDEX(index.dtype(), "scatter_add_", {
    scatter_add_kernel<I><<<grid, kThreads, 0, stream>>>(
        data_ptr<float>(out), data_ptr<const I>(index), data_ptr<const float>(src), L, n, len,
        out.stride(dim), index.stride(dim), src.stride(dim));
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void check_index_range(const char* op, const char* noun, const Tensor& index, int64_t bound,
                       const std::string& bound_desc) {
  const int64_t n = index.numel();
  if (n == 0) return;
  cudaStream_t stream = stream_of(index);
  Tensor flag = scratch(sizeof(unsigned long long), index.device());  // first bad position
  auto* first = data_ptr<unsigned long long>(flag);
  KEEL_CUDA_CHECK(cudaMemsetAsync(first, 0xff, sizeof(unsigned long long), stream));
  const Layout<1> L = make_layout<1>(index.sizes(), {index.strides()});
  const unsigned grid = grid_for(n, kThreads, index.device().index);
  KEEL_CUDA_DISPATCH_INDEX(index.dtype(), op, {
    find_bad_index<I><<<grid, kThreads, 0, stream>>>(data_ptr<const I>(index), L, n, bound, first);
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
  unsigned long long bad = ULLONG_MAX;
  read_back(&bad, first, sizeof(bad), stream);
  if (bad == ULLONG_MAX) return;
  // The bad element's position and value, for the same message as the CPU's.
  Shape pos(size_t(index.dim()));
  int64_t off = 0;
  for (int64_t d = index.dim() - 1, r = int64_t(bad); d >= 0; --d) {
    pos[size_t(d)] = r % index.size(d);
    r /= index.size(d);
    off += pos[size_t(d)] * index.stride(d);
  }
  int64_t value = 0;
  KEEL_CUDA_DISPATCH_INDEX(index.dtype(), op, {
    I v{};
    read_back(&v, data_ptr<const I>(index) + off, sizeof(I), stream);
    value = int64_t(v);
  });
  KEEL_FAIL(op, ": ", noun, " ", value, " at position ", shape_str(pos), " of ", index.describe(),
            " is out of range for ", bound_desc);
}

void gather(const Tensor& x, int64_t dim, const Tensor& index, Tensor& out) {
  const int64_t n = index.numel();
  if (n == 0) return;
  Shape xs = x.strides();
  const int64_t xd = xs[size_t(dim)];
  xs[size_t(dim)] = 0;  // the offset along dim comes from the index value
  const Layout<3> L = make_layout<3>(index.sizes(), {out.strides(), index.strides(), xs});
  const unsigned grid = grid_for(n, kThreads, x.device().index);
  cudaStream_t stream = stream_of(x);
  dispatch_bits(x.element_size(), [&](auto e) {
    using E = decltype(e);
    KEEL_CUDA_DISPATCH_INDEX(index.dtype(), "gather", {
      gather_kernel<E, I><<<grid, kThreads, 0, stream>>>(data_ptr<E>(out), data_ptr<const I>(index),
                                                         data_ptr<const E>(x), L, xd, n);
    });
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

void scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  if (out.dtype() == DType::F32) {
    scatter_add_f32(out, dim, index, src);
    return;
  }
  // bf16/f16: accumulate in f32 copies and round once on store.
  Tensor o32 = empty(out.sizes(), DType::F32, out.device());  // out's shape
  Tensor s32 = empty(src.sizes(), DType::F32, src.device());  // src's shape
  convert(out, o32);
  convert(src, s32);
  scatter_add_f32(o32, dim, index, s32);
  convert(o32, out);
}

void concat(const std::vector<Tensor>& xs, int64_t dim, Tensor& out) {
  cudaStream_t stream = stream_of(out);
  int64_t start = 0;
  for (const Tensor& x : xs) {
    const int64_t len = x.size(dim);
    if (len > 0 && x.numel() > 0) {
      Tensor dst = out.narrow(dim, start, len);  // x's slice of out
      const Layout<2> L = make_layout<2>(x.sizes(), {dst.strides(), x.strides()});
      const int64_t n = x.numel();
      const unsigned grid = grid_for(n, kThreads, out.device().index);
      dispatch_bits(x.element_size(), [&](auto e) {
        using E = decltype(e);
        copy_kernel<E><<<grid, kThreads, 0, stream>>>(data_ptr<E>(dst), data_ptr<const E>(x), L, n);
      });
      KEEL_CUDA_CHECK(cudaGetLastError());
    }
    start += len;
  }
}

}  // namespace keel::kernels::cuda
