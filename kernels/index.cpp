// Indexing and joining launchers: validate shapes, dtypes, devices and dims,
// allocate, dispatch by device. index_select and index_add_ are gather and
// scatter_add_ with the 1-D index broadcast (stride 0) over the other dims,
// so nothing is expanded in memory. Index values are range-checked by the
// device kernel, where they can be read.
#include "kernels/index.h"

#include <string>

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void check_index_range(const char* op, const char* noun, const Tensor& index, int64_t bound,
                       const std::string& bound_desc);
void gather(const Tensor& x, int64_t dim, const Tensor& index, Tensor& out);
void scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
void concat(const std::vector<Tensor>& xs, int64_t dim, Tensor& out);
}  // namespace cpu

namespace cuda {
// Synchronises the stream to read the verdict.
void check_index_range(const char* op, const char* noun, const Tensor& index, int64_t bound,
                       const std::string& bound_desc);
void gather(const Tensor& x, int64_t dim, const Tensor& index, Tensor& out);
void scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
void concat(const std::vector<Tensor>& xs, int64_t dim, Tensor& out);
}  // namespace cuda

namespace {

void check_index_dtype(const char* op, const Tensor& index) {
  KEEL_CHECK(index.dtype() == DType::I32 || index.dtype() == DType::I64, op,
             ": index must be i32 or i64, got ", index.describe());
}

void check_not_broadcast(const char* op, const Tensor& out) {
  for (int64_t d = 0; d < out.dim(); ++d)
    KEEL_CHECK(out.stride(d) != 0 || out.size(d) <= 1, op, ": out ", out.describe(),
               " is a broadcast view (stride 0 on dim ", d, "); its elements alias");
}

// A 1-D (or 0-d) index as (1, .., L, .., 1) broadcast to `shape` along dim.
Tensor spread_index(const Tensor& index, const Shape& shape, int64_t dim) {
  Shape s(shape.size(), 1);
  s[size_t(dim)] = index.numel();
  return index.reshape({index.numel()}).view(s).expand(shape);
}

// What an index along `dim` of t must stay below, for error messages.
std::string dim_desc(const char* name, const Tensor& t, int64_t dim) {
  return "dim " + std::to_string(dim) + " of size " + std::to_string(t.size(dim)) + " (" + name +
         " " + t.describe() + ")";
}

Tensor as_1d_index(const char* op, const Tensor& index) {
  check_index_dtype(op, index);
  KEEL_CHECK(index.dim() <= 1, op, ": index must be 1-D, got ", index.describe());
  return index.dim() == 0 ? index.reshape({1}) : index;
}

}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  const char* op = "gather";
  check_index_dtype(op, index);
  check_same_device(x, index, op);
  const int64_t d = normalize_dim(dim, x.dim(), "gather dim");
  KEEL_CHECK(index.dim() == x.dim(), op, ": index ", index.describe(), " and x ", x.describe(),
             " must have the same number of dims");
  for (int64_t k = 0; k < x.dim(); ++k)
    KEEL_CHECK(k == d || index.size(k) <= x.size(k), op, ": index ", index.describe(),
               " is larger than x ", x.describe(), " in dim ", k, " (only dim ", d, " may differ)");
  Tensor out = empty(index.sizes(), x.dtype(), x.device());  // index's shape
  on_device(
      op, x.device(),
      [&] {
        cpu::check_index_range(op, "index", index, x.size(d), dim_desc("x", x, d));
        cpu::gather(x, d, index, out);
      },
      [&] {
        cuda::check_index_range(op, "index", index, x.size(d), dim_desc("x", x, d));
        cuda::gather(x, d, index, out);
      });
  return out;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  const char* op = "index_select";
  Tensor idx = as_1d_index(op, index);
  check_same_device(x, idx, op);
  const int64_t d = normalize_dim(dim, x.dim(), "index_select dim");
  Shape s = x.sizes();
  s[size_t(d)] = idx.numel();
  Tensor out = empty(s, x.dtype(), x.device());  // x's shape, L along dim
  on_device(
      op, x.device(),
      [&] {
        cpu::check_index_range(op, "index", idx, x.size(d), dim_desc("x", x, d));
        cpu::gather(x, d, spread_index(idx, s, d), out);
      },
      [&] {
        cuda::check_index_range(op, "index", idx, x.size(d), dim_desc("x", x, d));
        cuda::gather(x, d, spread_index(idx, s, d), out);
      });
  return out;
}

void scatter_add_(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  const char* op = "scatter_add_";
  check_floating(op, out, "out");
  check_index_dtype(op, index);
  check_devices(op, out.device(), {&index, &src});
  KEEL_CHECK(src.dtype() == out.dtype(), op, ": dtypes differ (out ", out.describe(), ", src ",
             src.describe(), ")");
  const int64_t d = normalize_dim(dim, out.dim(), "scatter_add_ dim");
  KEEL_CHECK(index.dim() == out.dim() && src.dim() == out.dim(), op, ": out ", out.describe(),
             ", index ", index.describe(), " and src ", src.describe(),
             " must have the same number of dims");
  for (int64_t k = 0; k < out.dim(); ++k) {
    KEEL_CHECK(index.size(k) <= src.size(k), op, ": index ", index.describe(),
               " is larger than src ", src.describe(), " in dim ", k);
    KEEL_CHECK(k == d || index.size(k) <= out.size(k), op, ": index ", index.describe(),
               " is larger than out ", out.describe(), " in dim ", k, " (only dim ", d,
               " may differ)");
  }
  check_not_broadcast(op, out);
  KEEL_CHECK(out.storage() != src.storage(), op, ": out and src share memory");
  on_device(
      op, out.device(),
      [&] {
        cpu::check_index_range(op, "index", index, out.size(d), dim_desc("out", out, d));
        cpu::scatter_add(out, d, index, src);
      },
      [&] {
        cuda::check_index_range(op, "index", index, out.size(d), dim_desc("out", out, d));
        cuda::scatter_add(out, d, index, src);
      });
}

void index_add_(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  const char* op = "index_add_";
  check_floating(op, out, "out");
  Tensor idx = as_1d_index(op, index);
  check_devices(op, out.device(), {&idx, &src});
  KEEL_CHECK(src.dtype() == out.dtype(), op, ": dtypes differ (out ", out.describe(), ", src ",
             src.describe(), ")");
  const int64_t d = normalize_dim(dim, out.dim(), "index_add_ dim");
  Shape want = out.sizes();
  want[size_t(d)] = idx.numel();
  KEEL_CHECK(src.sizes() == want, op, ": src ", src.describe(), " should be ", shape_str(want),
             " for out ", out.describe(), " and index ", idx.describe());
  check_not_broadcast(op, out);
  KEEL_CHECK(out.storage() != src.storage(), op, ": out and src share memory");
  on_device(
      op, out.device(),
      [&] {
        cpu::check_index_range(op, "index", idx, out.size(d), dim_desc("out", out, d));
        cpu::scatter_add(out, d, spread_index(idx, want, d), src);
      },
      [&] {
        cuda::check_index_range(op, "index", idx, out.size(d), dim_desc("out", out, d));
        cuda::scatter_add(out, d, spread_index(idx, want, d), src);
      });
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  const char* op = "concat";
  KEEL_CHECK(!xs.empty(), op, ": no tensors to join");
  const Tensor& x0 = xs[0];
  KEEL_CHECK(x0.dim() >= 1, op, ": cannot join 0-d tensors (use stack)");
  const int64_t d = normalize_dim(dim, x0.dim(), "concat dim");
  Shape s = x0.sizes();
  s[size_t(d)] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    KEEL_CHECK(x.dtype() == x0.dtype() && x.device() == x0.device(), op, ": tensor ", i, " (",
               x.describe(), ") differs in dtype or device from tensor 0 (", x0.describe(), ")");
    bool ok = x.dim() == x0.dim();
    for (int64_t k = 0; ok && k < x.dim(); ++k) ok = k == d || x.size(k) == x0.size(k);
    KEEL_CHECK(ok, op, ": tensor ", i, " ", x.shape_string(), " does not match tensor 0 ",
               x0.shape_string(), " outside dim ", d);
    s[size_t(d)] += x.size(d);
  }
  Tensor out = empty(s, x0.dtype(), x0.device());  // sizes summed along dim
  on_device(
      op, out.device(), [&] { cpu::concat(xs, d, out); }, [&] { cuda::concat(xs, d, out); });
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  KEEL_CHECK(!xs.empty(), "stack: no tensors to join");
  const int64_t d = normalize_dim(dim, xs[0].dim() + 1, "stack dim");
  std::vector<Tensor> parts;
  for (size_t i = 0; i < xs.size(); ++i) {
    KEEL_CHECK(xs[i].sizes() == xs[0].sizes(), "stack: tensor ", i, " ", xs[i].describe(),
               " and tensor 0 ", xs[0].describe(), " differ in shape");
    parts.push_back(xs[i].unsqueeze(d));
  }
  return concat(parts, d);  // (.., n, ..)
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  const int64_t d = normalize_dim(dim, x.dim(), "split dim");
  int64_t total = 0;
  for (int64_t s : sizes) {
    KEEL_CHECK(s >= 0, "split: negative size in ", shape_str(sizes));
    total += s;
  }
  KEEL_CHECK(total == x.size(d), "split: sizes ", shape_str(sizes), " sum to ", total, " but dim ",
             d, " of ", x.describe(), " has ", x.size(d));
  std::vector<Tensor> out;
  int64_t start = 0;
  for (int64_t s : sizes) {
    out.push_back(x.narrow(d, start, s));
    start += s;
  }
  return out;
}

std::vector<int64_t> chunk_sizes(int64_t n, int64_t chunks) {
  KEEL_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks);
  if (n == 0) return std::vector<int64_t>(size_t(chunks), 0);
  const int64_t step = (n + chunks - 1) / chunks;
  std::vector<int64_t> sizes;
  for (int64_t left = n; left > 0; left -= step) sizes.push_back(std::min(step, left));
  return sizes;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  const int64_t d = normalize_dim(dim, x.dim(), "chunk dim");
  return split(x, chunk_sizes(x.size(d), chunks), d);
}

}  // namespace keel::kernels
