// Tensor: a cheap shared handle to (storage, sizes, strides, offset, dtype).
// Copying a Tensor copies the handle; views (reshape, transpose, narrow,
// expand, ...) share storage. The member view methods here are raw: they do
// not record autograd history. Differentiable versions are free functions in
// autograd/ (keel::reshape, keel::transpose, ...), which models must use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/philox.h"
#include "core/storage.h"

namespace keel {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "(2, 3, 4)"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);
// The broadcast of two shapes, or a keel::Error naming both and the op.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

struct AutogradMeta;  // autograd/ owns its definition
struct Box;           // core/box.h

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape sizes;
  Shape strides;  // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  std::shared_ptr<AutogradMeta> autograd;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& sizes() const { return impl().sizes; }
  const Shape& strides() const { return impl().strides; }
  int64_t size(int64_t dim) const;    // negative dims count from the end
  int64_t stride(int64_t dim) const;
  int64_t dim() const { return int64_t(impl().sizes.size()); }
  int64_t numel() const { return shape_numel(impl().sizes); }
  int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  size_t element_size() const { return dtype_size(dtype()); }
  bool is_contiguous() const;
  std::string shape_string() const { return shape_str(sizes()); }
  std::string describe() const;  // "f32 (2, 3) on cpu"
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  TensorImpl* impl_ptr() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_shared() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  // Pointer to element 0 of this view. data<T>() checks T against dtype().
  void* raw_data() const;
  template <typename T>
  T* data() const {
    check_dtype(DTypeOf<T>::value, "data<T>()");
    return static_cast<T*>(raw_data());
  }
  void check_dtype(DType expected, const char* what) const;

  // ---- raw views (share storage, no autograd) ----
  Tensor view(const Shape& shape) const;     // needs compatible strides
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor select(int64_t dim, int64_t index) const;  // drops dim
  Tensor expand(const Shape& shape) const;          // broadcast with stride 0
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor flatten() const { return reshape({numel()}); }
  Tensor as_strided(const Shape& sizes, const Shape& strides, int64_t offset) const;

  // ---- copies ----
  Tensor contiguous() const;  // this, if already contiguous
  Tensor clone() const;       // always a fresh contiguous copy
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor detach() const;      // same storage, no autograd history
  void copy_(const Tensor& src);  // src broadcast to this shape, dtype converted
  void fill_(double value);
  void zero_() { fill_(0.0); }

  // ---- host access (copies to the host when needed) ----
  template <typename T>
  std::vector<T> to_vector() const;
  double item() const;  // a one-element tensor's value

  // Moves this tensor's data to `d` in place: every handle sharing this
  // tensor sees the new storage; sizes, dtype and autograd state are kept.
  // How a module moves its parameters to a GPU while layers keep their
  // handles. Views of the old storage are not moved with it.
  void move_to_(Device d) const;

  // ---- autograd (defined in autograd/) ----
  bool requires_grad() const;
  Tensor& set_requires_grad(bool enabled = true);
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  bool is_leaf() const;
  // Runs the tape from this tensor; a non-scalar needs an explicit gradient.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;

 private:
  TensorImpl& impl() const;
  std::shared_ptr<TensorImpl> impl_;
};

// Strides of `t` broadcast to `shape` (0 on broadcast dims, aligned right);
// `t` must broadcast to `shape`.
Shape broadcast_strides(const Tensor& t, const Shape& shape);

// ---- factories ----
Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
// A host tensor in page-locked memory (pinned_allocator()): CUDA copies read
// and write it without staging, and cuda::copy_async overlaps them with
// other work. Ordinary host memory in a build without CUDA or with no device.
Tensor empty_pinned(const Shape& shape, DType dtype = DType::F32);
Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
            Device device = Device::cpu());
Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::I64,
              Device device = Device::cpu());
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                   Device device = Device::cpu());
// Random draws from the Philox stream: the result depends only on the
// generator's (seed, offset), never on threads or device.
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::F32,
             Device device = Device::cpu());
Tensor rand_uniform(const Shape& shape, double low, double high, Generator& gen,
                    DType dtype = DType::F32, Device device = Device::cpu());
Tensor randn(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
// The elements of randn(logical, gen) that lie in `boxes` (in bounds,
// disjoint; core/box.h), bit for bit, listed in the logical tensor's
// row-major order: a rank's shard of a parameter drawn without drawing the
// rest. Consumes one generator offset, as the full draw does. (n), n the
// boxes' total; reshape to the local shape. Drawn on the host, then moved.
Tensor randn_boxes(const Shape& logical, const std::vector<Box>& boxes, Generator& gen,
                   DType dtype = DType::F32, Device device = Device::cpu());

// Helpers for launchers.
int64_t normalize_dim(int64_t dim, int64_t ndim, const char* what = "dim");
void check_same_device(const Tensor& a, const Tensor& b, const char* op);

}  // namespace keel
