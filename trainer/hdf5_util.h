// HDF5 plumbing for checkpoints: RAII handles, quiet error stacks whose
// innermost message goes into keel::Error, dtype mapping and scalar
// attributes. Internal to trainer/checkpoint.cpp (one translation unit
// includes it; everything here is inline).
#pragma once

#include <hdf5.h>

#include <string>
#include <vector>

#include "core/tensor.h"

namespace keel::trainer::hdf5 {

// ---- HDF5 plumbing -----------------------------------------------------------

// Silences HDF5's automatic error printing for the lifetime of the guard; we
// report failures ourselves and restore whatever handler was installed.
class QuietHdf5Errors {
 public:
  QuietHdf5Errors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5Errors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietHdf5Errors(const QuietHdf5Errors&) = delete;
  QuietHdf5Errors& operator=(const QuietHdf5Errors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

inline herr_t collect_error(unsigned n, const H5E_error2_t* err, void* out) {
  auto* descs = static_cast<std::vector<std::string>*>(out);
  if (n < 3 && err->desc != nullptr && err->desc[0] != '\0') descs->emplace_back(err->desc);
  return 0;
}

// HDF5's most specific error descriptions, then the stack is cleared so the
// next failure starts clean.
inline std::string hdf5_detail() {
  std::vector<std::string> descs;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &descs);
  H5Eclear2(H5E_DEFAULT);
  if (descs.empty()) return "";
  std::string out = " (HDF5: ";
  for (size_t i = 0; i < descs.size(); ++i) out += (i ? "; " : "") + descs[i];
  return out + ")";
}

class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      closer_ = o.closer_;
      o.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }

  hid_t get() const { return id_; }
  // Closes now and reports whether HDF5 succeeded (closing a file flushes it).
  bool close() {
    herr_t rc = id_ >= 0 ? closer_(id_) : 0;
    id_ = -1;
    return rc >= 0;
  }

 private:
  void reset() {
    if (id_ >= 0) closer_(id_);
    id_ = -1;
  }
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

// Wraps a freshly returned id, or raises naming what was attempted.
inline Handle checked(hid_t id, Handle::Closer closer, const std::string& file,
                      const std::string& what) {
  if (id < 0) KEEL_FAIL("checkpoint ", file, ": ", what, " failed", hdf5_detail());
  return Handle(id, closer);
}

inline void check_rc(herr_t rc, const std::string& file, const std::string& what) {
  if (rc < 0) KEEL_FAIL("checkpoint ", file, ": ", what, " failed", hdf5_detail());
}

inline std::vector<hsize_t> to_hsize(const Shape& s) {
  return std::vector<hsize_t>(s.begin(), s.end());
}

// Rank 0 is HDF5's scalar dataspace; zero-length dimensions are allowed.
inline Handle make_space(const Shape& shape, const std::string& file) {
  if (shape.empty()) return checked(H5Screate(H5S_SCALAR), H5Sclose, file, "H5Screate");
  auto dims = to_hsize(shape);
  return checked(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose, file,
                 "H5Screate_simple");
}

inline Handle string_type(size_t size, const std::string& file) {
  Handle t = checked(H5Tcopy(H5T_C_S1), H5Tclose, file, "H5Tcopy");
  check_rc(H5Tset_size(t.get(), std::max<size_t>(size, 1)), file, "H5Tset_size");
  check_rc(H5Tset_strpad(t.get(), H5T_STR_NULLPAD), file, "H5Tset_strpad");
  check_rc(H5Tset_cset(t.get(), H5T_CSET_UTF8), file, "H5Tset_cset");
  return t;
}

inline bool link_exists(hid_t loc, const std::string& path) {
  // H5Lexists needs every intermediate link to exist, so test prefix by prefix.
  size_t pos = 0;
  while (true) {
    size_t next = path.find('/', pos + 1);
    std::string prefix = path.substr(0, next);
    if (prefix != "/" && H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (next == std::string::npos) return true;
    pos = next;
  }
}

// ---- dtypes --------------------------------------------------------------------

// Half types are widened to f32 in the file (and in memory on the way there).
inline DType stored_dtype(DType t) {
  return (t == DType::BF16 || t == DType::F16) ? DType::F32 : t;
}

inline hid_t mem_type(DType t) {
  switch (stored_dtype(t)) {
    case DType::F32:
      return H5T_NATIVE_FLOAT;
    case DType::I32:
      return H5T_NATIVE_INT32;
    case DType::I64:
      return H5T_NATIVE_INT64;
    case DType::U8:
      return H5T_NATIVE_UINT8;
    default:
      break;
  }
  KEEL_ASSERT(false, "no HDF5 memory type for ", dtype_name(t));
  return -1;
}

inline hid_t file_type(DType t) {
  switch (stored_dtype(t)) {
    case DType::F32:
      return H5T_IEEE_F32LE;
    case DType::I32:
      return H5T_STD_I32LE;
    case DType::I64:
      return H5T_STD_I64LE;
    case DType::U8:
      return H5T_STD_U8LE;
    default:
      break;
  }
  KEEL_ASSERT(false, "no HDF5 file type for ", dtype_name(t));
  return -1;
}

// ---- attributes -----------------------------------------------------------------

inline void write_attr_int(hid_t obj, const char* name, int64_t value, const std::string& file) {
  Handle space = make_space({}, file);
  Handle attr = checked(H5Acreate2(obj, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                        H5Aclose, file, std::string("creating attribute ") + name);
  check_rc(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), file,
           std::string("writing attribute ") + name);
}

inline bool attr_exists(hid_t obj, const char* name) { return H5Aexists(obj, name) > 0; }

inline int64_t read_attr_int(hid_t obj, const char* name, const std::string& file) {
  Handle attr = checked(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose, file,
                        std::string("opening attribute ") + name);
  Handle type = checked(H5Aget_type(attr.get()), H5Tclose, file, "H5Aget_type");
  KEEL_CHECK(H5Tget_class(type.get()) == H5T_INTEGER, "checkpoint ", file, ": attribute '", name,
             "' is not an integer");
  int64_t value = 0;
  check_rc(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), file,
           std::string("reading attribute ") + name);
  return value;
}

inline void write_attr_text(hid_t obj, const char* name, const std::string& text,
                            const std::string& file) {
  Handle type = string_type(text.size(), file);
  Handle space = make_space({}, file);
  Handle attr = checked(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                        H5Aclose, file, std::string("creating attribute ") + name);
  std::string buf = text.empty() ? std::string(1, '\0') : text;
  check_rc(H5Awrite(attr.get(), type.get(), buf.data()), file,
           std::string("writing attribute ") + name);
}

inline std::string read_attr_text(hid_t obj, const char* name, const std::string& file) {
  Handle attr = checked(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose, file,
                        std::string("opening attribute ") + name);
  Handle ftype = checked(H5Aget_type(attr.get()), H5Tclose, file, "H5Aget_type");
  KEEL_CHECK(H5Tget_class(ftype.get()) == H5T_STRING && H5Tis_variable_str(ftype.get()) == 0,
             "checkpoint ", file, ": attribute '", name, "' is not a fixed-length string");
  size_t size = H5Tget_size(ftype.get());
  Handle mtype = string_type(size, file);
  std::string buf(size, '\0');
  check_rc(H5Aread(attr.get(), mtype.get(), buf.data()), file,
           std::string("reading attribute ") + name);
  buf.erase(buf.find_last_not_of('\0') + 1);
  return buf;
}

}  // namespace keel::trainer::hdf5
