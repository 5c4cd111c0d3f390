// HDF5 checkpoints through the HDF5 C API. Every handle lives in an RAII
// wrapper, HDF5's own error printing is silenced while we work, and every
// failing call becomes a keel::Error naming the file, the object and HDF5's
// innermost complaint.
//
// One code path serves a single process and a collective group (save_parts,
// load_parts; a Group says which, an Io how the file is driven). A lone
// process, or a communicator of size 1 of any kind, uses the serial driver
// and no communication; CheckpointData is whole parts through the same path.
// Collectively, the file access list carries the MPI-IO driver on the
// group's communicator, every rank makes every create/write call, tensor
// transfers are collective with each rank selecting only its boxes (a union
// of hyperslabs), rank 0 alone writes metadata values, and rank 0 renames
// the file into place after a barrier that follows everyone's close.
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>

#include "parallel/communicator.h"
#include "parallel/data_parallel.h"
#include "trainer/hdf5_util.h"

namespace keel::trainer {
namespace {

namespace fs = std::filesystem;
using namespace hdf5;  // NOLINT: the plumbing this file is built on

// ---- tensors ---------------------------------------------------------------------

// How this process does its I/O: alone (whole tensors, default property
// lists) or as one rank of a collective save/load over the MPI-IO driver,
// where every rank makes every call and transfers are collective.
struct Io {
  hid_t file = -1;
  std::string name;  // the checkpoint path, for messages
  bool parallel = false;
  int rank = 0;
  Handle dxpl;  // parallel: collective transfers
  Handle dcpl;  // parallel: datasets are never pre-filled (every element gets written)

  hid_t xfer() const { return parallel ? dxpl.get() : H5P_DEFAULT; }
  hid_t create() const { return parallel ? dcpl.get() : H5P_DEFAULT; }
};

enum class Access { kWrite, kRead };

Io make_io(hid_t file_id, const std::string& name, bool parallel, int rank, Access access) {
  Io io;
  io.file = file_id;
  io.name = name;
  io.parallel = parallel;
  io.rank = rank;
  if (parallel) {
    io.dxpl = checked(H5Pcreate(H5P_DATASET_XFER), H5Pclose, name, "H5Pcreate(dataset transfer)");
    check_rc(H5Pset_dxpl_mpio(io.dxpl.get(), H5FD_MPIO_COLLECTIVE), name, "H5Pset_dxpl_mpio");
    // Reads stay collective calls but each rank reads for itself: Open MPI
    // 4.1's default collective reader (OMPIO's vulcan aggregation) returns
    // wrong values for some non-contiguous selections that overlap across
    // ranks, which box-shaped loads make (any layout, ranks reading the same
    // elements); ROMIO and the individual path read them right. Saves never
    // overlap and keep collective (aggregated) writes.
    if (access == Access::kRead)
      check_rc(H5Pset_dxpl_mpio_collective_opt(io.dxpl.get(), H5FD_MPIO_INDIVIDUAL_IO), name,
               "H5Pset_dxpl_mpio_collective_opt");
    io.dcpl = checked(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, name, "H5Pcreate(dataset create)");
    check_rc(H5Pset_fill_time(io.dcpl.get(), H5D_FILL_TIME_NEVER), name, "H5Pset_fill_time");
  }
  return io;
}

// Selects the elements of a dataset of `shape` in `boxes` (a union of
// hyperslabs) in `file_space` and returns the matching memory dataspace of
// as many elements; HDF5 transfers them in the dataset's row-major order.
// No boxes select nothing on both sides, so a process that holds no part of
// a tensor can still join a collective transfer.
Handle select_boxes(hid_t file_space, const Shape& shape, const std::vector<Box>& boxes,
                    const std::string& file) {
  const int64_t n = boxes_numel(boxes);
  if (shape.empty()) {  // a scalar dataspace: all or nothing
    Handle mem = make_space({}, file);
    if (n == 0) {
      check_rc(H5Sselect_none(file_space), file, "H5Sselect_none");
      check_rc(H5Sselect_none(mem.get()), file, "H5Sselect_none");
    } else {
      check_rc(H5Sselect_all(file_space), file, "H5Sselect_all");
    }
    return mem;
  }
  Handle mem = make_space({std::max<int64_t>(n, 1)}, file);
  if (n == 0) {
    check_rc(H5Sselect_none(file_space), file, "H5Sselect_none");
    check_rc(H5Sselect_none(mem.get()), file, "H5Sselect_none");
    return mem;
  }
  bool first = true;
  for (const Box& box : boxes) {
    if (box.numel() == 0) continue;  // HDF5 refuses a zero count
    auto start = to_hsize(box.offset);
    auto count = to_hsize(box.count);
    check_rc(H5Sselect_hyperslab(file_space, first ? H5S_SELECT_SET : H5S_SELECT_OR, start.data(),
                                 nullptr, count.data(), nullptr),
             file, "H5Sselect_hyperslab");
    first = false;
  }
  return mem;
}

// What is wrong with `part` as a description of (part of) a tensor, or "".
std::string part_problem(const TensorPart& part) {
  using keel::detail::cat;
  if (!part.problem.empty()) return part.problem;
  for (int64_t d : part.shape)
    if (d < 0) return cat("has a negative dimension in its shape ", shape_str(part.shape));
  std::string boxes = boxes_problem(part.shape, part.boxes);
  if (!boxes.empty()) return boxes;
  const int64_t n = boxes_numel(part.boxes);
  if (n == 0 && !part.local.defined()) return "";
  if (!part.local.defined()) return "is an undefined tensor";
  if (part.local.numel() != n)
    return cat("local tensor ", part.local.describe(), " has ", part.local.numel(),
               " elements for boxes of ", n, " (", part.boxes.size(), " boxes of shape ",
               shape_str(part.shape), ")");
  if (part.local.dtype() != part.dtype)
    return cat("is ", part.local.describe(), " but was declared ", dtype_name(part.dtype));
  return "";
}

// Creates dataset `path` with the part's full logical shape and writes this
// process's boxes of it from `part.local`. `what` names the tensor in errors.
void write_tensor(const Io& io, const std::string& path, const std::string& what,
                  const TensorPart& part) {
  const std::string& file = io.name;
  std::string problem = part_problem(part);
  KEEL_CHECK(problem.empty(), "checkpoint ", file, ": ", what, " ", problem);
  const int64_t n = boxes_numel(part.boxes);
  // A contiguous host copy in the stored dtype; a no-op for contiguous f32/int CPU tensors.
  Tensor host = n > 0 ? part.local.to(Device::cpu()).to(stored_dtype(part.dtype)).contiguous()
                      : Tensor();  // (n)

  Handle lcpl = checked(H5Pcreate(H5P_LINK_CREATE), H5Pclose, file, "H5Pcreate");
  check_rc(H5Pset_create_intermediate_group(lcpl.get(), 1), file,
           "H5Pset_create_intermediate_group");
  Handle file_space = make_space(part.shape, file);
  Handle dset = checked(H5Dcreate2(io.file, path.c_str(), file_type(part.dtype), file_space.get(),
                                   lcpl.get(), io.create(), H5P_DEFAULT),
                        H5Dclose, file, "creating dataset " + path + " for " + what);
  write_attr_text(dset.get(), "keel_dtype", dtype_name(part.dtype), file);

  // A tensor without elements has no storage in the file to transfer to
  // (and none is allocated for it when written collectively).
  if (shape_numel(part.shape) == 0) return;
  Handle mem_space = select_boxes(file_space.get(), part.shape, part.boxes, file);
  static char dummy = 0;  // H5Dwrite wants a non-null buffer even when nothing is selected
  const void* buf = n > 0 ? host.raw_data() : &dummy;
  check_rc(
      H5Dwrite(dset.get(), mem_type(part.dtype), mem_space.get(), file_space.get(), io.xfer(), buf),
      file, "writing " + what + " to " + path);
}

// The logical dtype of a tensor dataset: its keel_dtype attribute, or for
// files written by other tools, the dtype its HDF5 type maps to.
DType dataset_dtype(hid_t dset, const std::string& file, const std::string& what) {
  Handle type = checked(H5Dget_type(dset), H5Tclose, file, "H5Dget_type");
  H5T_class_t cls = H5Tget_class(type.get());
  size_t size = H5Tget_size(type.get());
  H5T_sign_t sign = cls == H5T_INTEGER ? H5Tget_sign(type.get()) : H5T_SGN_NONE;
  DType dt;
  if (attr_exists(dset, "keel_dtype")) {
    std::string name = read_attr_text(dset, "keel_dtype", file);
    try {
      dt = dtype_from_name(name);
    } catch (const Error&) {
      KEEL_FAIL("checkpoint ", file, ": ", what, " has unknown keel_dtype '", name, "'");
    }
    KEEL_CHECK(size == dtype_size(stored_dtype(dt)) &&
                   (is_floating(dt) ? cls == H5T_FLOAT : cls == H5T_INTEGER),
               "checkpoint ", file, ": ", what, " is marked ", name,
               " but its HDF5 type does not match (corrupt file?)");
    return dt;
  }
  if (cls == H5T_FLOAT && size == 4) return DType::F32;
  if (cls == H5T_INTEGER && size == 4 && sign == H5T_SGN_2) return DType::I32;
  if (cls == H5T_INTEGER && size == 8 && sign == H5T_SGN_2) return DType::I64;
  if (cls == H5T_INTEGER && size == 1 && sign == H5T_SGN_NONE) return DType::U8;
  KEEL_FAIL("checkpoint ", file, ": ", what, " has an HDF5 type keel cannot load (class ", int(cls),
            ", ", size, " bytes)");
}

Shape dataset_shape(hid_t dset, const std::string& file) {
  Handle space = checked(H5Dget_space(dset), H5Sclose, file, "H5Dget_space");
  int ndims = H5Sget_simple_extent_ndims(space.get());
  check_rc(ndims, file, "H5Sget_simple_extent_ndims");
  std::vector<hsize_t> dims(size_t(ndims), 0);
  if (ndims > 0)
    check_rc(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), file,
             "H5Sget_simple_extent_dims");
  return Shape(dims.begin(), dims.end());
}

// Reads this process's boxes of dataset `path` into `part.local` in place
// after checking that the stored tensor has the part's shape and dtype.
void read_tensor(const Io& io, const std::string& path, const std::string& what,
                 const TensorPart& part) {
  const std::string& file = io.name;
  std::string problem = part_problem(part);
  KEEL_CHECK(problem.empty(), "load_checkpoint: ", what, " ", problem);
  KEEL_CHECK(link_exists(io.file, path), "checkpoint ", file, ": ", what, " is missing (no ", path,
             " in the file)");
  Handle dset =
      checked(H5Dopen2(io.file, path.c_str(), H5P_DEFAULT), H5Dclose, file, "opening " + path);
  Shape stored_shape = dataset_shape(dset.get(), file);
  DType stored = dataset_dtype(dset.get(), file, what);
  KEEL_CHECK(stored_shape == part.shape && stored == part.dtype, "checkpoint ", file, ": ", what,
             " is ", dtype_name(stored), " ", shape_str(stored_shape), " in the file but ",
             dtype_name(part.dtype), " ", shape_str(part.shape), " was expected");

  const int64_t n = boxes_numel(part.boxes);
  if (shape_numel(part.shape) == 0) return;  // nothing stored (see write_tensor)
  Handle file_space = checked(H5Dget_space(dset.get()), H5Sclose, file, "H5Dget_space");
  Handle mem_space = select_boxes(file_space.get(), part.shape, part.boxes, file);
  Tensor host = empty({std::max<int64_t>(n, 1)}, stored_dtype(part.dtype));  // (n)
  check_rc(H5Dread(dset.get(), mem_type(part.dtype), mem_space.get(), file_space.get(), io.xfer(),
                   host.raw_data()),
           file, "reading " + what + " from " + path);
  if (n == 0) return;
  Tensor dst = part.local;  // a handle: copy_ writes through to the caller's storage
  // Narrowing f32 -> bf16/f16 is exact: the values came from there.
  dst.copy_(host.to(part.dtype).view(part.local.sizes()));
}

// ---- metadata ----------------------------------------------------------------------

// Creates scalar dataset /meta/<name>. In a collective save every rank
// creates it and rank 0 alone writes the value.
void write_meta(const Io& io, hid_t meta, const std::string& name, hid_t ftype, hid_t mtype,
                const void* buf) {
  const std::string& file = io.name;
  Handle space = make_space({}, file);
  Handle dset = checked(
      H5Dcreate2(meta, name.c_str(), ftype, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
      H5Dclose, file, "creating /meta/" + name);
  Handle mem = make_space({}, file);
  if (io.parallel && io.rank != 0) {
    check_rc(H5Sselect_none(space.get()), file, "H5Sselect_none");
    check_rc(H5Sselect_none(mem.get()), file, "H5Sselect_none");
  }
  check_rc(H5Dwrite(dset.get(), mtype, mem.get(), space.get(), io.xfer(), buf), file,
           "writing /meta/" + name);
}

enum class MetaKind { kText, kInt, kFloat };

const char* meta_kind_name(MetaKind k) {
  switch (k) {
    case MetaKind::kText:
      return "text";
    case MetaKind::kInt:
      return "an integer";
    case MetaKind::kFloat:
      return "a float";
  }
  return "?";
}

// Opens /meta/<name> and checks that it holds a scalar of the wanted kind.
Handle open_meta(hid_t file_id, const std::string& file, const std::string& name, MetaKind kind) {
  std::string path = "/meta/" + name;
  KEEL_CHECK(link_exists(file_id, path), "checkpoint ", file, ": metadata '", name,
             "' is missing (no ", path, " in the file)");
  Handle dset =
      checked(H5Dopen2(file_id, path.c_str(), H5P_DEFAULT), H5Dclose, file, "opening " + path);
  Handle type = checked(H5Dget_type(dset.get()), H5Tclose, file, "H5Dget_type");
  H5T_class_t cls = H5Tget_class(type.get());
  bool ok = kind == MetaKind::kText ? cls == H5T_STRING && H5Tis_variable_str(type.get()) == 0
                                    : cls == (kind == MetaKind::kInt ? H5T_INTEGER : H5T_FLOAT);
  KEEL_CHECK(ok && dataset_shape(dset.get(), file).empty(), "checkpoint ", file, ": metadata '",
             name, "' is not ", meta_kind_name(kind), " scalar");
  return dset;
}

std::string read_meta_text(hid_t file_id, const std::string& file, const std::string& name) {
  Handle dset = open_meta(file_id, file, name, MetaKind::kText);
  Handle ftype = checked(H5Dget_type(dset.get()), H5Tclose, file, "H5Dget_type");
  size_t size = H5Tget_size(ftype.get());
  Handle mtype = string_type(size, file);
  std::string buf(size, '\0');
  check_rc(H5Dread(dset.get(), mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), file,
           "reading /meta/" + name);
  // NULLPAD strings: trailing NULs are padding (the empty string is one NUL).
  buf.erase(buf.find_last_not_of('\0') + 1);
  return buf;
}

int64_t read_meta_int(hid_t file_id, const std::string& file, const std::string& name) {
  Handle dset = open_meta(file_id, file, name, MetaKind::kInt);
  int64_t v = 0;
  check_rc(H5Dread(dset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v), file,
           "reading /meta/" + name);
  return v;
}

double read_meta_float(hid_t file_id, const std::string& file, const std::string& name) {
  Handle dset = open_meta(file_id, file, name, MetaKind::kFloat);
  double v = 0;
  check_rc(H5Dread(dset.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v), file,
           "reading /meta/" + name);
  return v;
}

std::string format_double(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

// ---- names ---------------------------------------------------------------------------

// Tensor names become HDF5 paths below /model or /optim: '/' separates
// groups, so no component may be empty, "." or "..".
void check_tensor_name(const std::string& name, const std::string& kind, const std::string& file) {
  bool ok = !name.empty();
  size_t start = 0;
  while (ok) {
    size_t end = name.find('/', start);
    std::string part =
        name.substr(start, end == std::string::npos ? std::string::npos : end - start);
    ok = !part.empty() && part != "." && part != "..";
    if (end == std::string::npos) break;
    start = end + 1;
  }
  KEEL_CHECK(ok, "checkpoint ", file, ": ", kind, " tensor name '", name,
             "' is not a valid path (empty, or an empty, '.' or '..' component)");
}

void check_meta_name(const std::string& name, const std::string& file) {
  KEEL_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..",
             "checkpoint ", file, ": metadata name '", name,
             "' must be non-empty and contain no '/'");
}

// ---- opening ---------------------------------------------------------------------------

// `comm`: MPI_COMM_NULL for a single process, else the group's
// communicator for the MPI-IO driver (every later call is then collective).
Handle file_access_list(const std::string& file, MPI_Comm comm = MPI_COMM_NULL) {
  Handle fapl = checked(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, file, "H5Pcreate");
  // Closing the file closes anything still open in it, so an error path can
  // never leave the file half-open.
  check_rc(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), file, "H5Pset_fclose_degree");
  if (comm != MPI_COMM_NULL)
    check_rc(H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL), file, "H5Pset_fapl_mpio");
  return fapl;
}

// Opens a checkpoint for reading after checking that it is a complete keel
// checkpoint of a version we read.
Handle open_checkpoint(const std::string& path, MPI_Comm comm = MPI_COMM_NULL) {
  std::error_code ec;
  KEEL_CHECK(fs::exists(path, ec), "checkpoint ", path, ": file not found");
  KEEL_CHECK(fs::is_regular_file(path, ec), "checkpoint ", path, ": not a regular file");
  htri_t is_h5 = H5Fis_hdf5(path.c_str());
  if (is_h5 <= 0) {
    std::string detail = hdf5_detail();
    KEEL_FAIL("checkpoint ", path, ": not an HDF5 file (wrong file, or corrupt)", detail);
  }
  Handle fapl = file_access_list(path, comm);
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (id < 0) {
    std::string detail = hdf5_detail();
    KEEL_FAIL("checkpoint ", path, ": cannot open the HDF5 file (truncated or corrupt)", detail);
  }
  Handle f(id, H5Fclose);
  KEEL_CHECK(attr_exists(f.get(), "keel_checkpoint_version"), "checkpoint ", path,
             ": not a keel checkpoint (no keel_checkpoint_version attribute on /)");
  int64_t version = read_attr_int(f.get(), "keel_checkpoint_version", path);
  KEEL_CHECK(version == kCheckpointVersion, "checkpoint ", path, ": format version ", version,
             " is not supported (this keel reads version ", kCheckpointVersion, ")");
  KEEL_CHECK(attr_exists(f.get(), "complete") && read_attr_int(f.get(), "complete", path) == 1,
             "checkpoint ", path, ": incomplete (no 'complete' marker; the save was interrupted)");
  KEEL_CHECK(attr_exists(f.get(), "step"), "checkpoint ", path, ": no 'step' attribute on /");
  return f;
}

// Writes every part of `data` to a new file `tmp` (alone, or collectively
// over `comm`), the completion marker last.
void write_checkpoint_file(const std::string& tmp, const std::string& path,
                           const CheckpointParts& data, MPI_Comm comm, int rank) {
  Handle fapl = file_access_list(path, comm);
  Handle f = checked(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose, path,
                     "creating temporary file " + tmp);
  const Io io = make_io(f.get(), path, comm != MPI_COMM_NULL, rank, Access::kWrite);
  write_attr_int(f.get(), "keel_checkpoint_version", kCheckpointVersion, path);
  write_attr_int(f.get(), "step", data.step, path);
  for (const char* group : {"/model", "/optim", "/meta"})
    checked(H5Gcreate2(f.get(), group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, path,
            std::string("creating group ") + group);

  auto write_tensors = [&](const NamedParts& parts, const std::string& kind) {
    for (const auto& [name, part] : parts)
      write_tensor(io, "/" + kind + "/" + name, kind + " tensor '" + name + "'", part);
  };
  write_tensors(data.model, "model");
  write_tensors(data.optim, "optim");

  Handle meta = checked(H5Gopen2(f.get(), "/meta", H5P_DEFAULT), H5Gclose, path, "opening /meta");
  for (const auto& [name, text] : data.meta_text) {
    Handle type = string_type(text.size(), path);
    std::string buf = text.empty() ? std::string(1, '\0') : text;
    write_meta(io, meta.get(), name, type.get(), type.get(), buf.data());
  }
  for (const auto& [name, v] : data.meta_int)
    write_meta(io, meta.get(), name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
  for (const auto& [name, v] : data.meta_float)
    write_meta(io, meta.get(), name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
  meta.close();

  // The marker goes in only after everything else has reached the file.
  check_rc(H5Fflush(f.get(), H5F_SCOPE_GLOBAL), path, "flushing " + tmp);
  write_attr_int(f.get(), "complete", 1, path);
  if (!f.close()) KEEL_FAIL("checkpoint ", path, ": closing ", tmp, " failed", hdf5_detail());
}

// Names valid and unique, as save_checkpoint promises; the same checks on
// every rank of a collective save, so they fail everywhere or nowhere.
void check_names(const CheckpointParts& data, const std::string& path) {
  for (const auto* list : {&data.model, &data.optim}) {
    const std::string kind = list == &data.model ? "model" : "optim";
    std::set<std::string> seen;
    for (const auto& [name, part] : *list) {
      check_tensor_name(name, kind, path);
      KEEL_CHECK(seen.insert(name).second, "checkpoint ", path, ": ", kind, " tensor '", name,
                 "' appears twice");
    }
  }
  std::set<std::string> seen;
  auto claim = [&](const std::string& name) {
    check_meta_name(name, path);
    KEEL_CHECK(seen.insert(name).second, "checkpoint ", path, ": metadata '", name,
               "' appears twice");
  };
  for (const auto& e : data.meta_text) claim(e.first);
  for (const auto& e : data.meta_int) claim(e.first);
  for (const auto& e : data.meta_float) claim(e.first);
}

void fsync_path(const std::string& p, bool directory, const std::string& path) {
  int fd = ::open(p.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) {
    if (directory) return;  // best effort: some file systems cannot open directories
    KEEL_FAIL("checkpoint ", path, ": cannot open ", p, " to fsync: ", std::strerror(errno));
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Directories on some file systems refuse fsync (EINVAL); the rename still stands.
  if (rc != 0 && !directory)
    KEEL_FAIL("checkpoint ", path, ": fsync of ", p, " failed: ", std::strerror(err));
}

// (step, path) of every file in `dir` named like a checkpoint, newest first.

template <typename Info>
herr_t collect_link(hid_t, const char* name, const Info*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

// Relative paths of every dataset below `group`, in name order.
std::vector<std::string> datasets_under(hid_t file_id, const char* group, const std::string& file) {
  std::vector<std::string> links, out;
  if (!link_exists(file_id, group)) return out;
  Handle g = checked(H5Gopen2(file_id, group, H5P_DEFAULT), H5Gclose, file,
                     std::string("opening ") + group);
  check_rc(H5Lvisit(g.get(), H5_INDEX_NAME, H5_ITER_INC, collect_link, &links), file,
           std::string("listing ") + group);
  for (const auto& name : links) {
    Handle obj = checked(H5Oopen(g.get(), name.c_str(), H5P_DEFAULT), H5Oclose, file,
                         std::string("opening ") + group + "/" + name);
    if (H5Iget_type(obj.get()) == H5I_DATASET) out.push_back(name);
  }
  return out;
}

// ---- the group that saves or loads ----------------------------------------------------

// Who takes part: a lone process (the serial HDF5 driver, no communication)
// or the ranks of an MPI communicator (the MPI-IO driver, collective calls).
// A communicator of size 1 of any kind is a lone process.
struct Group {
  parallel::Communicator* comm = nullptr;  // null: a lone process without one
  MPI_Comm mpi = MPI_COMM_NULL;            // set when size > 1
  int rank = 0, size = 1;
  bool parallel() const { return size > 1; }
  // " (rank 3)" in a group of several, "" alone.
  std::string where() const { return parallel() ? keel::detail::cat(" (rank ", rank, ")") : ""; }
};

Group group_of(parallel::Communicator& comm, const std::string& path) {
  Group g;
  g.comm = &comm;
  g.rank = comm.rank();
  g.size = comm.size();
  if (!g.parallel()) return g;
  auto* mpi = dynamic_cast<parallel::MpiCommunicator*>(&comm);
  KEEL_CHECK(mpi != nullptr, "checkpoint ", path, ": a collective save or load over ", g.size,
             " ranks needs an MPI communicator (parallel HDF5 runs over MPI-IO), got ",
             "communicator '", comm.name(), "'; pass the MPI communicator of the same ranks");
  g.mpi = mpi->native_handle();
  return g;
}

// 64-bit FNV-1a of what every rank must agree on.
int64_t fingerprint(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return int64_t(h);
}

// What every rank of a collective call must list alike: tensor names,
// shapes and dtypes, and (for saves) the step and metadata values.
std::string listing(const CheckpointParts& data, bool with_values) {
  std::ostringstream os;
  if (with_values) os << "step " << data.step << "\n";
  for (const auto* list : {&data.model, &data.optim})
    for (const auto& [name, part] : *list)
      os << (list == &data.model ? "model " : "optim ") << name << " " << dtype_name(part.dtype)
         << " " << shape_str(part.shape) << "\n";
  for (const auto& [name, v] : data.meta_text)
    os << "text " << name << " " << (with_values ? v : "") << "\n";
  for (const auto& [name, v] : data.meta_int)
    os << "int " << name << " " << (with_values ? v : 0) << "\n";
  for (const auto& [name, v] : data.meta_float)
    os << "float " << name << " " << (with_values ? format_double(v) : "") << "\n";
  return os.str();
}

// Collective: every rank reports its own problem ("" when none) and its
// listing; a problem anywhere, or a listing that differs from rank 0's,
// becomes a keel::Error on every rank (the rank with the problem raises its
// own message, the others name that rank), before any collective file I/O
// could hang on it. Alone: the problem, if any, is raised.
void agree(const Group& g, const std::string& path, const char* op, const std::string& problem,
           const std::string& list) {
  if (!g.parallel()) {
    if (!problem.empty()) throw Error(problem);
    return;
  }
  Tensor mine = empty({2}, DType::I64);                   // (2)
  Tensor all = empty({2 * int64_t(g.size)}, DType::I64);  // (world, 2)
  mine.data<int64_t>()[0] = problem.empty() ? 0 : 1;
  mine.data<int64_t>()[1] = fingerprint(list);
  g.comm->all_gather(mine, all)->wait();
  const int64_t* v = all.data<int64_t>();
  if (!problem.empty()) throw Error(problem);
  for (int r = 0; r < g.size; ++r)
    KEEL_CHECK(v[2 * r] == 0, "checkpoint ", path, ": the collective ", op, " failed on rank ", r,
               " (see its error); nothing was ", std::string(op) == "save" ? "written" : "read");
  for (int r = 1; r < g.size; ++r)
    KEEL_CHECK(v[2 * r + 1] == v[1], "checkpoint ", path, ": rank ", r,
               " lists different tensors (names, shapes, dtypes)",
               std::string(op) == "save" ? ", step or metadata" : "",
               " than rank 0 in a collective ", op,
               "; every rank must list the same, in the same order");
}

// The first problem among the parts, as a message naming the tensor (and
// the rank, in a group), or "" when none.
std::string parts_problem(const CheckpointParts& data, const std::string& prefix, const Group& g) {
  for (const auto* list : {&data.model, &data.optim})
    for (const auto& [name, part] : *list) {
      std::string p = part_problem(part);
      if (!p.empty())
        return keel::detail::cat(prefix, ": ", list == &data.model ? "model" : "optim", " tensor '",
                                 name, "' ", p, g.where());
    }
  return "";
}

// Every rank's `mine`, in rank order (collective in a group).
std::vector<std::vector<int64_t>> gather_all(const Group& g, const std::vector<int64_t>& mine) {
  if (!g.parallel()) return {mine};
  Tensor len = full({1}, double(mine.size()), DType::I64);  // (1)
  Tensor lens = empty({int64_t(g.size)}, DType::I64);       // (world)
  g.comm->all_gather(len, lens)->wait();
  const int64_t* l = lens.data<int64_t>();
  const int64_t width = std::max<int64_t>(1, *std::max_element(l, l + g.size));
  Tensor padded = zeros({width}, DType::I64);                 // (width)
  Tensor all = empty({int64_t(g.size) * width}, DType::I64);  // (world, width)
  std::copy(mine.begin(), mine.end(), padded.data<int64_t>());
  g.comm->all_gather(padded, all)->wait();
  std::vector<std::vector<int64_t>> out(size_t(g.size));
  for (int r = 0; r < g.size; ++r) {
    const int64_t* row = all.data<int64_t>() + int64_t(r) * width;
    out[size_t(r)].assign(row, row + l[r]);
  }
  return out;
}

// The parts of a save together write every element of every tensor exactly
// once: the ranks' boxes are gathered and checked together, so every rank
// raises the same error. Runs after agree(): every rank lists the same
// tensors, and each rank's own boxes are in bounds and disjoint.
void check_coverage(const Group& g, const std::string& path, const CheckpointParts& data) {
  std::vector<std::pair<std::string, const TensorPart*>> all;  // ("model tensor 'w'", part)
  for (const auto* list : {&data.model, &data.optim})
    for (const auto& [name, part] : *list)
      all.emplace_back((list == &data.model ? "model tensor '" : "optim tensor '") + name + "'",
                       &part);
  // This rank's boxes, flattened: per tensor the count, then offsets and counts.
  std::vector<int64_t> mine;
  for (const auto& [what, part] : all) {
    mine.push_back(int64_t(part->boxes.size()));
    for (const Box& b : part->boxes) {
      mine.insert(mine.end(), b.offset.begin(), b.offset.end());
      mine.insert(mine.end(), b.count.begin(), b.count.end());
    }
  }
  const std::vector<std::vector<int64_t>> ranks = gather_all(g, mine);
  std::vector<size_t> cursor(ranks.size(), 0);
  const char* whose = g.parallel() ? "the ranks' parts of " : "the parts of ";
  for (const auto& [what, part] : all) {
    const size_t nd = part->shape.size();
    std::vector<Box> boxes;
    std::vector<int> owner;
    for (size_t r = 0; r < ranks.size(); ++r) {
      const std::vector<int64_t>& v = ranks[r];
      size_t& c = cursor[r];
      KEEL_ASSERT(c < v.size(), "rank ", r, "'s box list ends early");
      const int64_t n = v[c++];
      KEEL_ASSERT(c + size_t(n) * 2 * nd <= v.size(), "rank ", r, "'s box list is cut short");
      for (int64_t k = 0; k < n; ++k, c += 2 * nd) {
        boxes.push_back({Shape(v.begin() + long(c), v.begin() + long(c + nd)),
                         Shape(v.begin() + long(c + nd), v.begin() + long(c + 2 * nd))});
        owner.push_back(int(r));
      }
    }
    if (auto pair = find_overlap(part->shape, boxes))
      KEEL_FAIL("checkpoint ", path, ": ", whose, what, " overlap: rank ", owner[pair->first],
                "'s box ", box_str(boxes[pair->first]), " and rank ", owner[pair->second],
                "'s box ", box_str(boxes[pair->second]),
                " share elements; the parts of a collective save must cover each tensor once");
    const int64_t numel = shape_numel(part->shape), got = boxes_numel(boxes);
    KEEL_CHECK(got == numel, "checkpoint ", path, ": ", whose, what, " hold ", got,
               " elements in all but it has ", numel,
               "; the parts of a collective save must cover each tensor once");
  }
}

// Saves or loads of CheckpointData: whole parts of its tensors.
CheckpointParts whole_parts(const CheckpointData& data) {
  CheckpointParts parts;
  parts.step = data.step;
  for (const auto& [name, t] : data.model) parts.model.emplace_back(name, whole_part(t));
  for (const auto& [name, t] : data.optim) parts.optim.emplace_back(name, whole_part(t));
  parts.meta_text = data.meta_text;
  parts.meta_int = data.meta_int;
  parts.meta_float = data.meta_float;
  return parts;
}

// The one save path: checks (agreed over the group), the coverage of every
// tensor, then a temporary file that rank 0 renames into place once every
// rank has closed it.
void save_parts(const std::string& path, const CheckpointParts& data, const Group& g) {
  QuietHdf5Errors quiet;
  std::string problem;
  try {
    check_names(data, path);
    problem = parts_problem(data, "checkpoint " + path, g);
  } catch (const Error& e) {
    problem = e.what();
  }
  agree(g, path, "save", problem, listing(data, true));
  check_coverage(g, path, data);

  // One temporary name for the group: rank 0's.
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  if (g.parallel()) parallel::broadcast_string(*g.comm, tmp, 0);
  try {
    write_checkpoint_file(tmp, path, data, g.mpi, g.rank);
  } catch (...) {
    // An error every rank sees (the file cannot be created): rank 0 cleans
    // up. One seen by a single rank leaves the others in a collective call;
    // the job's error path (MPI_Abort) ends them, and the previous
    // checkpoint at `path` is untouched either way.
    if (g.rank == 0) {
      std::error_code ec;
      fs::remove(tmp, ec);
    }
    throw;
  }
  // Every rank has closed the file: only now may it take the real name.
  if (g.parallel()) g.comm->barrier();
  std::string failure;
  if (g.rank == 0) {
    try {
      fsync_path(tmp, false, path);
      if (std::rename(tmp.c_str(), path.c_str()) != 0)
        KEEL_FAIL("checkpoint ", path, ": cannot rename ", tmp,
                  " into place: ", std::strerror(errno));
      fs::path parent = fs::path(path).parent_path();
      fsync_path(parent.empty() ? "." : parent.string(), true, path);
    } catch (const Error& e) {
      failure = e.what();
      std::error_code ec;
      fs::remove(tmp, ec);
    }
  }
  if (g.parallel()) parallel::broadcast_string(*g.comm, failure, 0);
  if (!failure.empty()) {
    if (g.rank == 0) throw Error(failure);
    KEEL_FAIL("checkpoint ", path, ": rank 0 could not complete the save: ", failure);
  }
}

void read_checkpoint_file(const Io& io, CheckpointParts& into) {
  const std::string& path = io.name;
  into.step = read_attr_int(io.file, "step", path);
  auto read_tensors = [&](NamedParts& parts, const std::string& kind) {
    for (auto& [name, part] : parts)
      read_tensor(io, "/" + kind + "/" + name, kind + " tensor '" + name + "'", part);
  };
  read_tensors(into.model, "model");
  read_tensors(into.optim, "optim");
  for (auto& [name, v] : into.meta_text) v = read_meta_text(io.file, path, name);
  for (auto& [name, v] : into.meta_int) v = read_meta_int(io.file, path, name);
  for (auto& [name, v] : into.meta_float) v = read_meta_float(io.file, path, name);
}

// The one load path: checks (agreed over the group), then every rank reads
// its parts.
void load_parts(const std::string& path, CheckpointParts& into, const Group& g) {
  QuietHdf5Errors quiet;
  std::string problem;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    problem = keel::detail::cat("checkpoint ", path, ": file not found", g.where());
  } else if (!fs::is_regular_file(path, ec)) {
    problem = keel::detail::cat("checkpoint ", path, ": not a regular file", g.where());
  } else {
    try {
      for (const auto* list : {&into.model, &into.optim})
        for (const auto& [name, part] : *list)
          check_tensor_name(name, list == &into.model ? "model" : "optim", path);
      problem = parts_problem(into, "load_checkpoint", g);
    } catch (const Error& e) {
      problem = e.what();
    }
  }
  agree(g, path, "load", problem, listing(into, false));
  Handle f = open_checkpoint(path, g.mpi);
  const Io io = make_io(f.get(), path, g.parallel(), g.rank, Access::kRead);
  read_checkpoint_file(io, into);
}

}  // namespace

void save_checkpoint(const std::string& path, const CheckpointData& data) {
  save_parts(path, whole_parts(data), Group{});
}

void save_checkpoint(const std::string& path, const CheckpointParts& data,
                     parallel::Communicator& comm) {
  save_parts(path, data, group_of(comm, path));
}

void load_checkpoint(const std::string& path, CheckpointData& into) {
  CheckpointParts parts = whole_parts(into);  // handles: reads write through to into's tensors
  load_parts(path, parts, Group{});
  into.step = parts.step;
  into.meta_text = std::move(parts.meta_text);
  into.meta_int = std::move(parts.meta_int);
  into.meta_float = std::move(parts.meta_float);
}

void load_checkpoint(const std::string& path, CheckpointParts& into, parallel::Communicator& comm) {
  load_parts(path, into, group_of(comm, path));
}

std::vector<TensorInfo> list_checkpoint(const std::string& path) {
  QuietHdf5Errors quiet;
  Handle f = open_checkpoint(path);
  std::vector<TensorInfo> out;
  TensorInfo step;
  step.kind = TensorInfo::Kind::kInt;
  step.name = "step";
  step.value = std::to_string(read_attr_int(f.get(), "step", path));
  out.push_back(step);

  for (const char* group : {"/model", "/optim"}) {
    for (const auto& name : datasets_under(f.get(), group, path)) {
      std::string full = std::string(group) + "/" + name;
      Handle dset =
          checked(H5Dopen2(f.get(), full.c_str(), H5P_DEFAULT), H5Dclose, path, "opening " + full);
      TensorInfo info;
      info.kind = TensorInfo::Kind::kTensor;
      info.name = full;
      info.shape = dataset_shape(dset.get(), path);
      info.dtype = dataset_dtype(dset.get(), path, full);
      out.push_back(std::move(info));
    }
  }

  for (const auto& name : datasets_under(f.get(), "/meta", path)) {
    std::string full = "/meta/" + name;
    TensorInfo info;
    info.name = full;
    H5T_class_t cls;
    {
      Handle dset =
          checked(H5Dopen2(f.get(), full.c_str(), H5P_DEFAULT), H5Dclose, path, "opening " + full);
      Handle type = checked(H5Dget_type(dset.get()), H5Tclose, path, "H5Dget_type");
      cls = H5Tget_class(type.get());
    }
    if (cls == H5T_STRING) {
      info.kind = TensorInfo::Kind::kText;
      info.value = read_meta_text(f.get(), path, name);
    } else if (cls == H5T_INTEGER) {
      info.kind = TensorInfo::Kind::kInt;
      info.value = std::to_string(read_meta_int(f.get(), path, name));
    } else if (cls == H5T_FLOAT) {
      info.kind = TensorInfo::Kind::kFloat;
      info.value = format_double(read_meta_float(f.get(), path, name));
    } else {
      KEEL_FAIL("checkpoint ", path, ": metadata ", full, " has an unsupported HDF5 type");
    }
    out.push_back(std::move(info));
  }
  return out;
}

bool is_complete_checkpoint(const std::string& path) {
  QuietHdf5Errors quiet;
  try {
    open_checkpoint(path);
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace keel::trainer
