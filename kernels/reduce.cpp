// Reduction launchers.
#include "kernels/reduce.h"

#include <algorithm>

#include "kernels/dispatch.h"

namespace keel::kernels {

namespace cpu {
void sum(const Tensor& x, const std::vector<int64_t>& rdims, double scale, Tensor& out);
void var(const Tensor& x, const std::vector<int64_t>& rdims, int64_t correction, Tensor& out);
void max(const Tensor& x, int64_t dim, Tensor& values, Tensor& indices);
}  // namespace cpu

namespace cuda {
void sum(const Tensor& x, const std::vector<int64_t>& rdims, double scale, Tensor& out);
void var(const Tensor& x, const std::vector<int64_t>& rdims, int64_t correction, Tensor& out);
void max(const Tensor& x, int64_t dim, Tensor& values, Tensor& indices);
}  // namespace cuda

std::vector<int64_t> reduce_dims(const Tensor& x, const std::vector<int64_t>& dims,
                                 const char* op) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < x.dim(); ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) {
    int64_t nd = normalize_dim(d, x.dim(), op);
    KEEL_CHECK(std::find(out.begin(), out.end(), nd) == out.end(), op, ": dim ", d,
               " listed twice for ", x.describe());
    out.push_back(nd);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Shape reduced_shape(const Shape& s, const std::vector<int64_t>& rdims, bool keepdim) {
  Shape out;
  for (int64_t d = 0; d < int64_t(s.size()); ++d) {
    bool red = std::find(rdims.begin(), rdims.end(), d) != rdims.end();
    if (!red) out.push_back(s[size_t(d)]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

static Tensor sum_scaled(const char* op, const Tensor& x, const std::vector<int64_t>& dims,
                         bool keepdim, bool average) {
  check_floating(op, x, "input");
  auto rd = reduce_dims(x, dims, op);
  int64_t count = 1;
  for (int64_t d : rd) count *= x.size(d);
  Tensor out = empty(reduced_shape(x.sizes(), rd, keepdim), x.dtype(), x.device());
  double scale = average ? 1.0 / double(std::max<int64_t>(count, 1)) : 1.0;
  on_device(
      op, x.device(), [&] { cpu::sum(x, rd, scale, out); },
      [&] { cuda::sum(x, rd, scale, out); });
  return out;
}

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_scaled("sum", x, dims, keepdim, false);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  KEEL_CHECK(x.numel() > 0, "mean: empty input ", x.describe());
  return sum_scaled("mean", x, dims, keepdim, true);
}

Tensor var(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction, bool keepdim) {
  check_floating("var", x, "input");
  KEEL_CHECK(correction >= 0, "var: correction must be >= 0, got ", correction);
  auto rd = reduce_dims(x, dims, "var");
  Tensor out = empty(reduced_shape(x.sizes(), rd, keepdim), x.dtype(), x.device());
  on_device(
      "var", x.device(), [&] { cpu::var(x, rd, correction, out); },
      [&] { cuda::var(x, rd, correction, out); });
  return out;
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  check_floating("max", x, "input");
  int64_t d = normalize_dim(dim, x.dim(), "max dim");
  KEEL_CHECK(x.size(d) > 0, "max: dim ", dim, " of ", x.describe(), " is empty");
  Shape s = reduced_shape(x.sizes(), {d}, keepdim);
  Tensor values = empty(s, x.dtype(), x.device());
  Tensor indices = empty(s, DType::I64, x.device());
  on_device(
      "max", x.device(), [&] { cpu::max(x, d, values, indices); },
      [&] { cuda::max(x, d, values, indices); });
  return {values, indices};
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.sizes() == shape) return x;
  KEEL_CHECK(int64_t(shape.size()) <= x.dim(), "sum_to: cannot reduce ", x.describe(), " to ",
             shape_str(shape));
  const int64_t lead = x.dim() - int64_t(shape.size());
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d < lead) {
      dims.push_back(d);
      continue;
    }
    int64_t want = shape[size_t(d - lead)];
    KEEL_CHECK(want == x.size(d) || want == 1, "sum_to: cannot reduce ", x.describe(), " to ",
               shape_str(shape));
    if (want == 1 && x.size(d) != 1) dims.push_back(d);
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, true).reshape(shape);
}

}  // namespace keel::kernels
