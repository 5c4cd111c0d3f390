// CPU embedding. Forward copies one weight row per id, in parallel over ids.
// Backward buckets positions by id (a stable counting sort, or a stable
// sort when V is much larger than the number of ids), then gives each
// distinct id, i.e. each dweight row, to one thread: no two threads write one
// row, and each row sums its contributions in position order, so the result
// does not depend on the thread count.
#include "kernels/embedding.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/dispatch.h"

namespace keel::kernels::cpu {

// Defined in kernels/cpu/index.cpp.
void check_index_range(const char* op, const char* noun, const Tensor& index, int64_t bound,
                       const std::string& bound_desc);

namespace {

std::string v_desc(const char* name, const Tensor& w) {
  return "V = " + std::to_string(w.size(0)) + " (" + name + " " + w.describe() + ")";
}

template <typename T, typename I>
void lookup_rows(const Tensor& weight, const I* ids, int64_t n, Tensor& out) {
  const T* w = static_cast<const T*>(weight.raw_data());
  T* o = static_cast<T*>(out.raw_data());  // (n, C), contiguous
  const int64_t c = weight.size(1), sr = weight.stride(0), sc = weight.stride(1);
#pragma omp parallel for schedule(static) if (n * c >= kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = w + int64_t(ids[i]) * sr;
    T* dst = o + i * c;
    if (sc == 1) {
      std::memcpy(dst, row, size_t(c) * sizeof(T));
    } else {
      for (int64_t j = 0; j < c; ++j) dst[j] = row[j * sc];
    }
  }
}

// Positions 0..n-1 ordered by id, ties in position order.
template <typename I>
std::vector<int64_t> order_by_id(const I* ids, int64_t n, int64_t v) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  if (v <= 4 * n + 1024) {  // counting sort: O(n + V)
    std::vector<int64_t> start(static_cast<size_t>(v) + 1, 0);
    for (int64_t i = 0; i < n; ++i) ++start[size_t(ids[i]) + 1];
    for (int64_t k = 0; k < v; ++k) start[size_t(k) + 1] += start[size_t(k)];
    for (int64_t i = 0; i < n; ++i) order[size_t(start[size_t(ids[i])]++)] = i;
  } else {  // V far beyond n: sorting n positions is cheaper than V buckets
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [ids](int64_t a, int64_t b) { return ids[a] < ids[b]; });
  }
  return order;
}

template <typename T, typename I>
void scatter_rows(const Tensor& dout, const I* ids, int64_t n, Tensor& dweight) {
  if (n == 0) return;
  const int64_t c = dweight.size(1), sr = dweight.stride(0), sc = dweight.stride(1);
  Tensor g = dout.contiguous();  // (n, C) rows
  const T* gp = static_cast<const T*>(g.raw_data());
  T* w = static_cast<T*>(dweight.raw_data());
  const std::vector<int64_t> order = order_by_id(ids, n, dweight.size(0));
  std::vector<int64_t> seg{0};  // order[seg[s] .. seg[s+1]) share one id
  for (int64_t i = 1; i < n; ++i)
    if (ids[order[size_t(i)]] != ids[order[size_t(i - 1)]]) seg.push_back(i);
  seg.push_back(n);
  const int64_t segments = int64_t(seg.size()) - 1;
#pragma omp parallel if (n * c >= kParallelGrain)
  {
    std::vector<double> acc(static_cast<size_t>(c));
    // Dynamic: one frequent id (padding, a common token) is a long segment.
#pragma omp for schedule(dynamic, 8)
    for (int64_t s = 0; s < segments; ++s) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t q = seg[size_t(s)]; q < seg[size_t(s) + 1]; ++q) {
        const T* row = gp + order[size_t(q)] * c;
        for (int64_t j = 0; j < c; ++j) acc[size_t(j)] += double(load_f32(row[j]));
      }
      T* dst = w + int64_t(ids[order[size_t(seg[size_t(s)])]]) * sr;
      for (int64_t j = 0; j < c; ++j)
        dst[j * sc] = store_f32<T>(float(double(load_f32(dst[j * sc])) + acc[size_t(j)]));
    }
  }
}

template <typename T>
void embedding_t(const Tensor& weight, const Tensor& ids, Tensor& out) {
  Tensor flat = ids.contiguous();  // ids' shape, read as (n)
  if (flat.dtype() == DType::I32)
    lookup_rows<T>(weight, flat.data<int32_t>(), flat.numel(), out);
  else
    lookup_rows<T>(weight, flat.data<int64_t>(), flat.numel(), out);
}

template <typename T>
void embedding_backward_t(const Tensor& dout, const Tensor& ids, Tensor& dweight) {
  Tensor flat = ids.contiguous();  // ids' shape, read as (n)
  if (flat.dtype() == DType::I32)
    scatter_rows<T>(dout, flat.data<int32_t>(), flat.numel(), dweight);
  else
    scatter_rows<T>(dout, flat.data<int64_t>(), flat.numel(), dweight);
}

}  // namespace

void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  // Checked up front, before any parallel region (an exception cannot leave one).
  check_index_range("embedding", "id", ids, weight.size(0), v_desc("weight", weight));
  KEEL_DISPATCH_FLOAT(weight.dtype(), "embedding", embedding_t<T>(weight, ids, out));
}

void embedding_backward(const Tensor& dout, const Tensor& ids, Tensor& dweight) {
  check_index_range("embedding_backward", "id", ids, dweight.size(0), v_desc("dweight", dweight));
  KEEL_DISPATCH_FLOAT(dweight.dtype(), "embedding_backward",
                      embedding_backward_t<T>(dout, ids, dweight));
}

}  // namespace keel::kernels::cpu
