// Tensor handles, views, copies and factories.
#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <sstream>

#include "core/box.h"
#include "core/scalar_cast.h"
#include "core/strided.h"
#ifdef KEEL_WITH_CUDA
#include "core/cuda/copy.h"
#endif

namespace keel {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = int64_t(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

int64_t normalize_dim(int64_t dim, int64_t ndim, const char* what) {
  int64_t d = dim < 0 ? dim + ndim : dim;
  KEEL_CHECK(d >= 0 && d < ndim, what, " ", dim, " is out of range for a tensor with ", ndim,
             " dims");
  return d;
}

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  KEEL_CHECK(a.device() == b.device(), op, ": tensors are on different devices (",
             a.device().str(), " and ", b.device().str(), ")");
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    KEEL_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ",
               shape_str(b), " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  const Shape& s = t.sizes();
  KEEL_ASSERT(s.size() <= shape.size());
  Shape out(shape.size(), 0);
  size_t lead = shape.size() - s.size();
  for (size_t i = 0; i < s.size(); ++i) {
    KEEL_ASSERT(s[i] == shape[lead + i] || s[i] == 1);
    out[lead + i] = s[i] == 1 ? 0 : t.strides()[i];
  }
  return out;
}

TensorImpl& Tensor::impl() const {
  KEEL_CHECK(impl_ != nullptr, "use of an undefined (empty) Tensor");
  return *impl_;
}

int64_t Tensor::size(int64_t d) const { return sizes()[normalize_dim(d, dim())]; }
int64_t Tensor::stride(int64_t d) const { return strides()[normalize_dim(d, dim())]; }

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (sizes()[i] == 1) continue;
    if (strides()[i] != acc) return false;
    acc *= sizes()[i];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return std::string(dtype_name(dtype())) + " " + shape_string() + " on " + device().str();
}

void* Tensor::raw_data() const {
  return static_cast<char*>(impl().storage->data()) + offset() * int64_t(element_size());
}

void Tensor::check_dtype(DType expected, const char* what) const {
  KEEL_CHECK(dtype() == expected, what, ": expected ", dtype_name(expected), ", got ",
             describe());
}

static Tensor make_view(const Tensor& base, Shape sizes, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->sizes = std::move(sizes);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

static Shape infer_shape(const Shape& shape, int64_t numel, const char* op, const Shape& from) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      KEEL_CHECK(infer < 0, op, ": only one dim may be -1 in ", shape_str(shape));
      infer = int64_t(i);
    } else {
      KEEL_CHECK(out[i] >= 0, op, ": negative size in ", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    KEEL_CHECK(known != 0 && numel % known == 0, op, ": cannot reshape ", shape_str(from),
               " to ", shape_str(shape));
    out[infer] = numel / known;
  }
  KEEL_CHECK(shape_numel(out) == numel, op, ": cannot reshape ", shape_str(from), " (", numel,
             " elements) to ", shape_str(shape));
  return out;
}

// Strides for viewing `t` as `shape` without a copy, if possible. Old dims
// are grouped into runs that are contiguous with each other; each run must
// map onto whole new dims, which then take strides inside that run.
static bool view_strides(const Tensor& t, const Shape& shape, Shape& out) {
  const Shape& os = t.sizes();
  const Shape& ost = t.strides();
  out.assign(shape.size(), 1);
  if (t.numel() == 0 || os.empty()) {
    out = contiguous_strides(shape);
    return true;
  }
  int64_t nd = int64_t(shape.size()) - 1;
  int64_t base = ost.back(), run = 1, got = 1;
  for (int64_t od = int64_t(os.size()) - 1; od >= 0; --od) {
    run *= os[od];
    bool run_ends = od == 0 || (os[od - 1] != 1 && ost[od - 1] != run * base);
    if (!run_ends) continue;
    while (nd >= 0 && (got < run || shape[nd] == 1)) {
      out[nd] = got * base;
      got *= shape[nd];
      --nd;
    }
    if (got != run) return false;
    if (od > 0) {
      base = ost[od - 1];
      run = 1;
      got = 1;
    }
  }
  return nd == -1;
}

Tensor Tensor::view(const Shape& shape) const {
  Shape s = infer_shape(shape, numel(), "view", sizes());
  Shape st;
  KEEL_CHECK(view_strides(*this, s, st), "view: ", describe(), " with strides ",
             shape_str(strides()), " cannot be viewed as ", shape_str(s),
             " without a copy (use reshape)");
  return make_view(*this, s, st, offset());
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = infer_shape(shape, numel(), "reshape", sizes());
  Shape st;
  if (view_strides(*this, s, st)) return make_view(*this, s, st, offset());
  return contiguous().view(s);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = normalize_dim(d0, dim(), "transpose dim");
  d1 = normalize_dim(d1, dim(), "transpose dim");
  Shape s = sizes(), st = strides();
  std::swap(s[d0], s[d1]);
  std::swap(st[d0], st[d1]);
  return make_view(*this, s, st, offset());
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  KEEL_CHECK(int64_t(dims.size()) == dim(), "permute: got ", dims.size(), " dims for ",
             describe());
  Shape s(dims.size()), st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = normalize_dim(dims[i], dim(), "permute dim");
    KEEL_CHECK(!seen[d], "permute: dim ", d, " repeated");
    seen[d] = true;
    s[i] = sizes()[d];
    st[i] = strides()[d];
  }
  return make_view(*this, s, st, offset());
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = normalize_dim(d, dim(), "narrow dim");
  KEEL_CHECK(start >= 0 && length >= 0 && start + length <= sizes()[d], "narrow: range [",
             start, ", ", start + length, ") is out of bounds for dim ", d, " of ",
             describe());
  Shape s = sizes();
  s[d] = length;
  return make_view(*this, s, strides(), offset() + start * strides()[d]);
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = normalize_dim(d, dim(), "select dim");
  KEEL_CHECK(index >= 0 && index < sizes()[d], "select: index ", index,
             " out of range for dim ", d, " of ", describe());
  Shape s = sizes(), st = strides();
  int64_t off = offset() + index * st[d];
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return make_view(*this, s, st, off);
}

Tensor Tensor::expand(const Shape& shape) const {
  KEEL_CHECK(shape.size() >= sizes().size(), "expand: cannot expand ", describe(), " to ",
             shape_str(shape));
  size_t lead = shape.size() - sizes().size();
  Shape s(shape.size()), st(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      KEEL_CHECK(shape[i] >= 0, "expand: bad size in ", shape_str(shape));
      s[i] = shape[i];
      continue;
    }
    int64_t cur = sizes()[i - lead];
    int64_t want = shape[i] == -1 ? cur : shape[i];
    KEEL_CHECK(cur == want || cur == 1, "expand: cannot expand ", describe(), " to ",
               shape_str(shape));
    s[i] = want;
    st[i] = cur == want ? strides()[i - lead] : 0;
  }
  return make_view(*this, s, st, offset());
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = normalize_dim(d, dim() + 1, "unsqueeze dim");
  Shape s = sizes(), st = strides();
  int64_t stv = d < dim() ? st[d] * s[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stv);
  return make_view(*this, s, st, offset());
}

Tensor Tensor::squeeze(int64_t d) const {
  d = normalize_dim(d, dim(), "squeeze dim");
  KEEL_CHECK(sizes()[d] == 1, "squeeze: dim ", d, " of ", describe(), " is not 1");
  Shape s = sizes(), st = strides();
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return make_view(*this, s, st, offset());
}

Tensor Tensor::as_strided(const Shape& s, const Shape& st, int64_t off) const {
  KEEL_CHECK(s.size() == st.size(), "as_strided: sizes and strides differ in length");
  int64_t max_off = off;
  for (size_t i = 0; i < s.size(); ++i) {
    KEEL_CHECK(s[i] >= 0 && st[i] >= 0, "as_strided: negative size or stride");
    if (s[i] > 0) max_off += (s[i] - 1) * st[i];
  }
  KEEL_CHECK(off >= 0 && (shape_numel(s) == 0 ||
                          (max_off + 1) * int64_t(element_size()) <= int64_t(storage()->nbytes())),
             "as_strided: view ", shape_str(s), " at offset ", off, " exceeds its storage");
  return make_view(*this, s, st, off);
}

Tensor Tensor::detach() const { return make_view(*this, sizes(), strides(), offset()); }

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(sizes(), dtype(), device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = empty(sizes(), t, device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = empty(sizes(), dtype(), d);
  out.copy_(*this);
  return out;
}

void Tensor::move_to_(Device d) const {
  if (d == device()) return;
  Tensor moved = to(d).contiguous();
  TensorImpl& self = impl();
  self.storage = moved.impl().storage;
  self.strides = moved.strides();
  self.offset = moved.impl().offset;
}

template <typename D, typename S>
static void copy_cpu(Tensor& dst, const Tensor& src) {
  D* dp = static_cast<D*>(dst.raw_data());
  const S* sp = static_cast<const S*>(src.raw_data());
  std::array<Shape, 2> st{dst.strides(), broadcast_strides(src, dst.sizes())};
  strided_for_each<2>(dst.sizes(), st, [&](std::array<int64_t, 2> o, int64_t n,
                                           std::array<int64_t, 2> s) {
    D* d = dp + o[0];
    const S* x = sp + o[1];
    if (s[0] == 1 && s[1] == 1) {
      if constexpr (std::is_same_v<D, S>) {
        std::memcpy(d, x, size_t(n) * sizeof(D));
      } else {
        for (int64_t i = 0; i < n; ++i) d[i] = cast_value<D>(x[i]);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) d[i * s[0]] = cast_value<D>(x[i * s[1]]);
    }
  });
}

#ifdef KEEL_WITH_CUDA
// t with its broadcast (stride-0) dims cut to size 1: the elements t owns,
// so only those are gathered and moved between devices.
static Tensor own_elements(const Tensor& t) {
  Tensor c = t;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.stride(d) == 0 && t.size(d) > 1) c = c.narrow(d, 0, 1);
  return c;
}

// copy_ where at least one side is a CUDA tensor. On one device the copy
// kernel does everything; across devices src's own elements are gathered
// densely where they are, moved as bytes, and broadcast and converted on
// the destination's device (the host, or the copy kernel).
static void copy_across(Tensor& dst, const Tensor& src) {
  if (dst.device() == src.device()) {
    cuda::copy_tensor(dst, src);
    return;
  }
  if (src.dtype() == dst.dtype() && src.sizes() == dst.sizes() && src.is_contiguous() &&
      dst.is_contiguous()) {
    copy_bytes(dst.raw_data(), dst.device(), src.raw_data(), src.device(),
               size_t(dst.numel()) * dst.element_size());
    return;
  }
  Tensor own = own_elements(src).contiguous();  // on src's device
  Tensor moved;
  if (own.sizes() == dst.sizes() && own.dtype() == dst.dtype() && dst.is_contiguous()) {
    moved = dst;  // straight into place
  } else {
    moved = empty(own.sizes(), own.dtype(), dst.device());
  }
  copy_bytes(moved.raw_data(), moved.device(), own.raw_data(), own.device(),
             size_t(own.numel()) * own.element_size());
  if (moved.same(dst)) return;
  dst.copy_(moved.expand(src.sizes()));  // same device now: host loop or copy kernel
}
#endif

void Tensor::copy_(const Tensor& src) {
  // broadcast_shapes refuses incompatible shapes; src must also not widen this.
  KEEL_CHECK(src.dim() <= dim() && broadcast_shapes(sizes(), src.sizes(), "copy_") == sizes(),
             "copy_: cannot copy ", src.describe(), " into ", describe());
  if (numel() == 0) return;
  if (device().is_cpu() && src.device().is_cpu()) {
    KEEL_DISPATCH_ALL(dtype(), {
      using DstT = T;
      KEEL_DISPATCH_ALL(src.dtype(), copy_cpu<DstT, T>(*this, src));
    });
    return;
  }
#ifdef KEEL_WITH_CUDA
  copy_across(*this, src);
#else
  KEEL_FAIL("copy_: ", src.describe(), " -> ", describe(), " needs a CUDA build of keel");
#endif
}

void Tensor::fill_(double value) {
  if (numel() == 0) return;
  if (device().is_cpu()) {
    KEEL_DISPATCH_ALL(dtype(), {
      T v = from_double<T>(value);
      T* p = static_cast<T*>(raw_data());
      std::array<Shape, 1> st{strides()};
      strided_for_each<1>(sizes(), st, [&](std::array<int64_t, 1> o, int64_t n,
                                           std::array<int64_t, 1> s) {
        for (int64_t i = 0; i < n; ++i) p[o[0] + i * s[0]] = v;
      });
    });
    return;
  }
#ifdef KEEL_WITH_CUDA
  cuda::fill_tensor(*this, value);
#else
  KEEL_FAIL("fill_: ", describe(), " needs a CUDA build of keel");
#endif
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = to(Device::cpu()).to(DTypeOf<T>::value).contiguous();
  const T* p = static_cast<const T*>(host.raw_data());
  return std::vector<T>(p, p + numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

double Tensor::item() const {
  KEEL_CHECK(numel() == 1, "item: expected a one-element tensor, got ", describe());
  Tensor host = to(Device::cpu());
  double v = 0;
  KEEL_DISPATCH_ALL(dtype(), {
    v = to_double(*static_cast<const T*>(host.raw_data()));
  });
  return v;
}

// ---- factories ----

Tensor empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) KEEL_CHECK(d >= 0, "empty: negative size in ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device);
  impl->sizes = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor empty_pinned(const Shape& shape, DType dtype) {
  for (int64_t d : shape) KEEL_CHECK(d >= 0, "empty_pinned: negative size in ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype),
                                            Device::cpu(), pinned_allocator());
  impl->sizes = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor arange(double start, double end, double step, DType dtype, Device device) {
  KEEL_CHECK(step != 0, "arange: step is 0");
  int64_t n = std::max<int64_t>(0, int64_t(std::ceil((end - start) / step)));
#ifdef KEEL_WITH_CUDA
  if (device.is_cuda()) {
    Tensor t = empty({n}, dtype, device);
    cuda::arange_fill(t, start, step);
    return t;
  }
#endif
  Tensor host = empty({n}, dtype, Device::cpu());
  KEEL_DISPATCH_ALL(dtype, {
    T* p = host.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = from_double<T>(start + double(i) * step);
  });
  return host.to(device);
}

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  KEEL_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
             " values do not fill shape ", shape_str(shape));
  Tensor host = empty(shape, DTypeOf<T>::value, Device::cpu());
  if (!values.empty()) std::memcpy(host.raw_data(), values.data(), values.size() * sizeof(T));
  return host.to(device);
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&, Device);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, Device);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, Device);
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, Device);

template <typename Draw>
static Tensor random_fill(const Shape& shape, DType dtype, Device device, Draw draw) {
  Tensor host = empty(shape, DType::F32, Device::cpu());
  float* p = host.data<float>();
  const int64_t n = host.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; ++i) p[i] = draw(uint64_t(i));
  return host.to(dtype).to(device);
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
  KEEL_CHECK(is_floating(dtype), "random tensors must be floating, got ", dtype_name(dtype));
  uint64_t seed = gen.seed(), off = gen.next_offset();
#ifdef KEEL_WITH_CUDA
  if (device.is_cuda()) {  // drawn on the device, the same values (core/cuda/philox_exact.h)
    Tensor t = empty(shape, dtype, device);
    cuda::randn_fill(t, seed, off);
    return t;
  }
#endif
  return random_fill(shape, dtype, device,
                     [=](uint64_t i) { return philox_normal_at(seed, off, i); });
}

Tensor randn_boxes(const Shape& logical, const std::vector<Box>& boxes, Generator& gen, DType dtype,
                   Device device) {
  KEEL_CHECK(is_floating(dtype), "random tensors must be floating, got ", dtype_name(dtype));
  const std::string problem = boxes_problem(logical, boxes);
  KEEL_CHECK(problem.empty(), "randn_boxes: ", problem);
  uint64_t seed = gen.seed(), off = gen.next_offset();
  const std::vector<FlatRun> runs = box_runs(logical, boxes);  // row-major order
  std::vector<int64_t> starts(runs.size() + 1, 0);  // where each run begins in the output
  for (size_t k = 0; k < runs.size(); ++k) starts[k + 1] = starts[k] + runs[k].end - runs[k].begin;
  const int64_t n = starts.back();
  Tensor host = empty({n}, DType::F32, Device::cpu());  // (n)
  float* p = host.data<float>();
  // Fixed chunks of the output, each walking the runs from the one it starts in.
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
    size_t k = size_t(std::upper_bound(starts.begin(), starts.end(), lo) - starts.begin()) - 1;
    for (int64_t j = lo; j < hi; ++j) {
      while (j >= starts[k + 1]) ++k;
      p[j] = philox_normal_at(seed, off, uint64_t(runs[k].begin + (j - starts[k])));
    }
  }
  return host.to(dtype).to(device);
}

Tensor rand_uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype,
                    Device device) {
  KEEL_CHECK(is_floating(dtype), "random tensors must be floating, got ", dtype_name(dtype));
  uint64_t seed = gen.seed(), off = gen.next_offset();
  float lo = float(low), span = float(high - low);
#ifdef KEEL_WITH_CUDA
  if (device.is_cuda()) {
    Tensor t = empty(shape, dtype, device);
    cuda::uniform_fill(t, seed, off, lo, span);
    return t;
  }
#endif
  // philox_uniform is in (0, 1]; 1 - u is in [0, 1), the usual half-open range.
  return random_fill(shape, dtype, device, [=](uint64_t i) {
    return lo + span * (1.0f - philox_uniform_at(seed, off, i));
  });
}

Tensor randn(const Shape& shape, DType dtype, Device device) {
  return randn(shape, default_generator(), dtype, device);
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

}  // namespace keel
