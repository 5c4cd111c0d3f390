// CUDA embedding.
// Forward: one warp per id copies its weight row (16 bytes per access when
// the rows are dense and aligned; bits are moved, never converted).
// Backward, deterministic and free of atomics (a frequent id such as padding
// would otherwise serialise thousands of atomic adds on one row):
//   1. (id, position) pairs are sorted by id with CUB's stable radix sort,
//      so each id's positions stay in increasing order;
//   2. run-length encoding gives each distinct id's segment of the sorted
//      positions;
//   3. one block per distinct id sums its segment's dout rows column by
//      column in position order in f64, and adds the sum to the dweight row
//      once (the block owns that row).
// Ids are range-checked on the device first (kernels/cuda/index.cu), which
// synchronises the stream to report a bad id with its position.
#include <cub/cub.cuh>
#include <string>

#include "kernels/cuda/common.cuh"

namespace keel::kernels::cuda {

namespace {

constexpr int kThreads = 256;

// Warp w of the grid copies row ids[w] of weight into out row w.
template <typename E, typename I>
__global__ void __launch_bounds__(kThreads)
    embedding_rows(const E* w, int64_t sr, int64_t sc, const I* ids, Layout<1> Lid, int64_t n,
                   int64_t C, E* out) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t warps = int64_t(gridDim.x) * (kThreads / 32);
  for (int64_t i = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32; i < n; i += warps) {
    int64_t off[1];
    layout_offsets<1>(Lid, uint64_t(i), off);
    const E* row = w + int64_t(ids[off[0]]) * sr;
    E* dst = out + i * C;
    constexpr int kV = 16 / int(sizeof(E));
    if (sc == 1 && aligned16(row) && aligned16(dst) && C % kV == 0) {
      const uint4* src4 = reinterpret_cast<const uint4*>(row);
      uint4* dst4 = reinterpret_cast<uint4*>(dst);
      for (int64_t j = lane; j < C / kV; j += 32) dst4[j] = src4[j];
    } else {
      for (int64_t j = lane; j < C; j += 32) dst[j] = row[j * sc];
    }
  }
}

// keys[i] = ids[i] (row-major position i), vals[i] = i.
template <typename I>
__global__ void __launch_bounds__(kThreads)
    make_pairs(const I* ids, Layout<1> Lid, int64_t n, uint32_t* keys, uint32_t* vals) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[1];
    layout_offsets<1>(Lid, uint64_t(i), off);
    keys[i] = uint32_t(ids[off[0]]);
    vals[i] = uint32_t(i);
  }
}

// Block b takes distinct ids b, b + gridDim.x, ...: dweight[id] += the sum
// of dout rows at that id's positions, in position order, in f64.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    segment_sum(const T* dout, int64_t C, const uint32_t* unique_ids, const int32_t* counts,
                const int32_t* starts, const int32_t* num_runs, const uint32_t* positions, T* dw,
                int64_t sr, int64_t sc) {
  const int64_t runs = *num_runs;
  for (int64_t s = blockIdx.x; s < runs; s += gridDim.x) {
    const int64_t id = unique_ids[s], q0 = starts[s], q1 = q0 + counts[s];
    T* row = dw + id * sr;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      double acc = 0.0;
      for (int64_t q = q0; q < q1; ++q) acc += double(to_f32(dout[int64_t(positions[q]) * C + c]));
      row[c * sc] = from_f32<T>(float(double(to_f32(row[c * sc])) + acc));
    }
  }
}

std::string v_desc(const char* name, const Tensor& w) {
  return "V = " + std::to_string(w.size(0)) + " (" + name + " " + w.describe() + ")";
}

int end_bit_for(int64_t v) {  // bits that hold every id in [0, v)
  int bits = 1;
  while (bits < 32 && (int64_t(1) << bits) < v) ++bits;
  return bits;
}

template <typename T, typename I>
void backward(const Tensor& g, const Tensor& ids, Tensor& dweight) {
  const int64_t n = ids.numel(), C = dweight.size(1), V = dweight.size(0);
  const Device dev = dweight.device();
  cudaStream_t stream = stream_of(dweight);
  const Layout<1> Lid = make_layout<1>(ids.sizes(), {ids.strides()});
  const int ni = int(n);
  // Device buffers: keys and positions in and sorted, distinct ids, counts,
  // segment starts, and the number of distinct ids.
  Tensor buf =
      scratch(int64_t(sizeof(uint32_t)) * 5 * n + int64_t(sizeof(int32_t)) * 2 * n + 16, dev);
  uint32_t* keys_in = data_ptr<uint32_t>(buf);
  uint32_t* keys = keys_in + n;
  uint32_t* vals_in = keys + n;
  uint32_t* vals = vals_in + n;
  uint32_t* unique_ids = vals + n;
  int32_t* counts = reinterpret_cast<int32_t*>(unique_ids + n);
  int32_t* starts = counts + n;
  int32_t* num_runs = starts + n;
  make_pairs<I><<<grid_for(n, kThreads, dev.index), kThreads, 0, stream>>>(
      data_ptr<const I>(ids), Lid, n, keys_in, vals_in);
  KEEL_CUDA_CHECK(cudaGetLastError());

  const int end_bit = end_bit_for(V);
  size_t sort_bytes = 0, rle_bytes = 0, scan_bytes = 0;
  KEEL_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, keys_in, keys, vals_in, vals,
                                                  ni, 0, end_bit, stream));
  KEEL_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(nullptr, rle_bytes, keys, unique_ids, counts,
                                                     num_runs, ni, stream));
  KEEL_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, counts, starts, ni, stream));
  size_t temp_bytes = std::max(sort_bytes, std::max(rle_bytes, scan_bytes));
  Tensor temp = scratch(int64_t(temp_bytes), dev);
  void* tp = temp.raw_data();
  KEEL_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tp, temp_bytes, keys_in, keys, vals_in, vals, ni,
                                                  0, end_bit, stream));
  temp_bytes = rle_bytes;
  KEEL_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(tp, temp_bytes, keys, unique_ids, counts,
                                                     num_runs, ni, stream));
  // Over all n counts: entries past the number of runs are never read.
  temp_bytes = scan_bytes;
  KEEL_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tp, temp_bytes, counts, starts, ni, stream));

  const int threads = int(std::min<int64_t>(kThreads, (C + 31) / 32 * 32));
  const auto blocks = unsigned(std::min<int64_t>(n, int64_t(sm_count(dev.index)) * 16));
  segment_sum<T><<<blocks, threads, 0, stream>>>(data_ptr<const T>(g), C, unique_ids, counts,
                                                 starts, num_runs, vals, data_ptr<T>(dweight),
                                                 dweight.stride(0), dweight.stride(1));
  KEEL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  check_index_range("embedding", "id", ids, weight.size(0), v_desc("weight", weight));
  const int64_t n = ids.numel(), C = weight.size(1);
  if (n == 0 || C == 0) return;
  const Layout<1> Lid = make_layout<1>(ids.sizes(), {ids.strides()});
  const auto blocks =
      unsigned(std::min<int64_t>((n + 7) / 8, int64_t(sm_count(weight.device().index)) * 32));
  cudaStream_t stream = stream_of(weight);
  dispatch_bits(weight.element_size(), [&](auto e) {
    using E = decltype(e);
    KEEL_CUDA_DISPATCH_INDEX(ids.dtype(), "embedding", {
      embedding_rows<E, I><<<blocks, kThreads, 0, stream>>>(
          data_ptr<const E>(weight), weight.stride(0), weight.stride(1), data_ptr<const I>(ids),
          Lid, n, C, data_ptr<E>(out));
    });
  });
  KEEL_CUDA_CHECK(cudaGetLastError());
}

void embedding_backward(const Tensor& dout, const Tensor& ids, Tensor& dweight) {
  check_index_range("embedding_backward", "id", ids, dweight.size(0), v_desc("dweight", dweight));
  const int64_t n = ids.numel();
  if (n == 0 || dweight.size(1) == 0) return;
  KEEL_CHECK(n <= int64_t(INT32_MAX) && dweight.size(0) <= (int64_t(1) << 32),
             "embedding_backward: CUDA path supports up to 2^31 ids and 2^32 rows, got ",
             ids.describe(), " and ", dweight.describe());
  Tensor g = dout.contiguous();  // (n, C) rows
  KEEL_CUDA_DISPATCH_FLOAT(dweight.dtype(), "embedding_backward", {
    KEEL_CUDA_DISPATCH_INDEX(ids.dtype(), "embedding_backward", backward<T, I>(g, ids, dweight));
  });
}

}  // namespace keel::kernels::cuda
