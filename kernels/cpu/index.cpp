// CPU indexing kernels. gather walks every position of the index in parallel
// (it only reads x, so any split is safe). scatter_add must not let two
// threads add into one element: positions that differ off `dim` address
// distinct elements of out, so threads split those and each walks `dim` in
// order, which also fixes the order of every sum. Index range checks run
// before either, serially, as an exception cannot leave a parallel region.
#include "kernels/index.h"

#include <array>
#include <string>

#include "core/scalar_cast.h"
#include "core/strided.h"
#include "kernels/dispatch.h"

namespace keel::kernels::cpu {

namespace {

template <typename I>
void check_range_t(const char* op, const char* noun, const Tensor& index, const I* p, int64_t bound,
                   const std::string& bound_desc) {
  const int64_t n = index.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] >= 0 && int64_t(p[i]) < bound) [[likely]]
      continue;
    Shape pos(size_t(index.dim()));
    for (int64_t d = index.dim() - 1, r = i; d >= 0; --d) {
      pos[size_t(d)] = r % index.size(d);
      r /= index.size(d);
    }
    KEEL_FAIL(op, ": ", noun, " ", int64_t(p[i]), " at position ", shape_str(pos), " of ",
              index.describe(), " is out of range for ", bound_desc);
  }
}

template <typename T, typename I>
void gather_t(const Tensor& x, int64_t dim, const Tensor& index, Tensor& out) {
  const T* xp = static_cast<const T*>(x.raw_data());
  const I* ip = static_cast<const I*>(index.raw_data());
  T* op = static_cast<T*>(out.raw_data());
  Shape xs = x.strides();
  const int64_t xd = xs[size_t(dim)];
  xs[size_t(dim)] = 0;  // the offset along dim comes from the index value
  const std::array<Shape, 3> st{out.strides(), index.strides(), xs};
  strided_for_each<3>(
      index.sizes(), st, [&](std::array<int64_t, 3> o, int64_t n, std::array<int64_t, 3> s) {
        for (int64_t i = 0; i < n; ++i)
          op[o[0] + i * s[0]] = xp[o[2] + i * s[2] + int64_t(ip[o[1] + i * s[1]]) * xd];
      });
}

template <typename T>
void gather_dispatch(const Tensor& x, int64_t dim, const Tensor& index, Tensor& out) {
  if (index.dtype() == DType::I32)
    gather_t<T, int32_t>(x, dim, index, out);
  else
    gather_t<T, int64_t>(x, dim, index, out);
}

// out (f32) += src (f32) at index along dim.
template <typename I>
void scatter_add_t(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  Shape sizes;
  std::array<Shape, 3> st;  // out, index, src strides off dim
  for (int64_t k = 0; k < index.dim(); ++k) {
    if (k == dim) continue;
    sizes.push_back(index.size(k));
    st[0].push_back(out.stride(k));
    st[1].push_back(index.stride(k));
    st[2].push_back(src.stride(k));
  }
  const int64_t len = index.size(dim);
  const int64_t od = out.stride(dim), id = index.stride(dim), sd = src.stride(dim);
  if (len == 0 || index.numel() == 0) return;
  float* op = out.data<float>();
  const I* ip = static_cast<const I*>(index.raw_data());
  const float* sp = src.data<float>();
  strided_for_each<3>(sizes, st,
                      [&](std::array<int64_t, 3> o, int64_t n, std::array<int64_t, 3> s) {
                        // This piece's positions are this thread's alone; dim runs outermost so
                        // the inner loop moves along the (usually contiguous) other dims.
                        for (int64_t l = 0; l < len; ++l) {
                          const I* irow = ip + o[1] + l * id;
                          const float* srow = sp + o[2] + l * sd;
                          float* orow = op + o[0];
                          for (int64_t i = 0; i < n; ++i)
                            orow[i * s[0] + int64_t(irow[i * s[1]]) * od] += srow[i * s[2]];
                        }
                      });
}

void scatter_add_f32(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  if (index.dtype() == DType::I32)
    scatter_add_t<int32_t>(out, dim, index, src);
  else
    scatter_add_t<int64_t>(out, dim, index, src);
}

}  // namespace

void check_index_range(const char* op, const char* noun, const Tensor& index, int64_t bound,
                       const std::string& bound_desc) {
  Tensor c = index.contiguous();  // index's shape, read flat
  if (c.dtype() == DType::I32)
    check_range_t(op, noun, index, c.data<int32_t>(), bound, bound_desc);
  else
    check_range_t(op, noun, index, c.data<int64_t>(), bound, bound_desc);
}

void gather(const Tensor& x, int64_t dim, const Tensor& index, Tensor& out) {
  KEEL_DISPATCH_ALL(x.dtype(), gather_dispatch<T>(x, dim, index, out));
}

void scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  if (out.dtype() == DType::F32) {
    scatter_add_f32(out, dim, index, src);
    return;
  }
  // bf16/f16: accumulate in f32 and round once on store.
  Tensor o32 = out.to(DType::F32), s32 = src.to(DType::F32);  // copies of out's and src's shapes
  scatter_add_f32(o32, dim, index, s32);
  out.copy_(o32);
}

void concat(const std::vector<Tensor>& xs, int64_t dim, Tensor& out) {
  int64_t start = 0;
  for (const Tensor& x : xs) {
    const int64_t len = x.size(dim);
    if (len > 0) out.narrow(dim, start, len).copy_(x);
    start += len;
  }
}

}  // namespace keel::kernels::cpu
