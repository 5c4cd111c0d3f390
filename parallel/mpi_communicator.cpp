// The MPI backend: collectives on host tensors through MPI's non-blocking
// calls (MPI_Iallreduce, MPI_Ireduce_scatter_block, MPI_Iallgather,
// MPI_Ibcast, MPI_Isend/Irecv, MPI_Ialltoallv), each returning a Work that
// owns the request and keeps its buffers alive. The blocking conveniences
// (all_reduce_, ...) call MPI's blocking forms instead, which Open MPI runs
// with its tuned algorithms (faster than libnbc's; bench/README.md). Every
// communicator is a duplicate or split with MPI_ERRORS_RETURN, so failures
// come back as codes, raised as keel::Error naming the call, the operation
// and the rank.
//
// bf16/f16 reductions are converted to f32 around the call (MPI has no
// 16-bit float types and a user MPI_Op would round after every partial
// sum); the f32 result is rounded once when the Work completes. Avg is a Sum
// divided by size() on completion. Other operations move 16-bit values as
// MPI_UINT16_T, bit for bit.
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <functional>

#include "parallel/check.h"
#include "parallel/communicator.h"

namespace keel::parallel {

namespace {

using detail::where;
using keel::detail::cat;

bool is_half(DType t) { return t == DType::BF16 || t == DType::F16; }

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32:
      return MPI_FLOAT;
    case DType::BF16:
    case DType::F16:
      return MPI_UINT16_T;  // moved, never reduced, as 16-bit words
    case DType::I32:
      return MPI_INT32_T;
    case DType::I64:
      return MPI_INT64_T;
    case DType::U8:
      return MPI_UINT8_T;
  }
  KEEL_ASSERT(false, "unknown dtype");
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::Max ? MPI_MAX : MPI_SUM; }

// MPI counts are ints.
int mpi_count(const Communicator& c, const char* op, const Tensor& t) {
  KEEL_CHECK(t.numel() <= INT_MAX, where(c, op), ": ", t.describe(), " has ", t.numel(),
             " elements, beyond MPI's int count limit (", INT_MAX, "); split it");
  return int(t.numel());
}

void divide(const Tensor& f32, int n) {
  float* p = f32.data<float>();
  const float inv = float(n);
  for (int64_t i = 0, e = f32.numel(); i < e; ++i) p[i] /= inv;
}

// Names an operation in messages; formatted only when one is needed, so the
// blocking path of small collectives costs no string formatting.
struct Label {
  const char* op = "";
  std::string comm;
  int rank = 0, size = 1;
  std::string extra;  // e.g. " to rank 1 tag 3"
  std::string str() const {
    return cat(op, " on communicator '", comm, "' (rank ", rank, " of ", size, ")", extra);
  }
};

// One MPI request, the buffers it uses and what to do once it completes.
class MpiWork final : public Work {
 public:
  MpiWork(Label label, MPI_Request req, std::vector<Tensor> keep, std::function<void()> finish,
          std::vector<std::vector<int>> arrays)
      : label_(std::move(label)),
        req_(req),
        keep_(std::move(keep)),
        finish_(std::move(finish)),
        arrays_(std::move(arrays)) {}

  ~MpiWork() override {
    try {
      wait();
    } catch (const std::exception& e) {
      // A destructor cannot throw; say what was lost instead of dropping it.
      std::fprintf(stderr, "keel: unfinished %s failed while being destroyed: %s\n",
                   label_.str().c_str(), e.what());
    }
  }

  void wait() override {
    if (finished_) return;
    finished_ = true;
    int finalized = 0;
    MPI_Finalized(&finalized);
    KEEL_CHECK(!finalized, label_.str(), ": waited on after MPI_Finalize");
    MPI_Status status;
    int rc = MPI_Wait(&req_, &status);
    KEEL_CHECK(rc == MPI_SUCCESS, label_.str(), " failed: ", keel::detail::mpi_error_string(rc));
    complete();
  }

  bool done() override {
    if (finished_) return true;
    int flag = 0;
    MPI_Status status;
    int rc = MPI_Test(&req_, &flag, &status);
    if (rc != MPI_SUCCESS) {
      finished_ = true;
      KEEL_FAIL(label_.str(), " failed: ", keel::detail::mpi_error_string(rc));
    }
    if (!flag) return false;
    finished_ = true;
    complete();
    return true;
  }

 private:
  void complete() {
    if (finish_) finish_();
    keep_.clear();
    arrays_.clear();
  }

  Label label_;
  MPI_Request req_;
  std::vector<Tensor> keep_;
  std::function<void()> finish_;
  std::vector<std::vector<int>> arrays_;  // count/displacement arrays MPI reads until completion
  bool finished_ = false;
};

class MpiBackend final : public MpiCommunicator {
 public:
  MpiBackend(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
    KEEL_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    KEEL_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    KEEL_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    void* ub = nullptr;
    int flag = 0;
    KEEL_MPI_CHECK(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &ub, &flag));
    tag_ub_ = flag ? *static_cast<int*>(ub) : 32767;
  }

  ~MpiBackend() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  MPI_Comm native_handle() const override { return comm_; }

  WorkPtr all_reduce(Tensor& t, ReduceOp op) override { return all_reduce_impl(t, op, false); }
  void all_reduce_(Tensor& t, ReduceOp op) override { all_reduce_impl(t, op, true); }
  WorkPtr reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    return reduce_scatter_impl(in, out, op, false);
  }
  void reduce_scatter_(const Tensor& in, Tensor& out, ReduceOp op) override {
    reduce_scatter_impl(in, out, op, true);
  }
  WorkPtr all_gather(const Tensor& in, Tensor& out) override {
    return all_gather_impl(in, out, false);
  }
  void all_gather_(const Tensor& in, Tensor& out) override { all_gather_impl(in, out, true); }
  WorkPtr all_to_all(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                     const std::vector<int64_t>& recv_counts) override {
    return all_to_all_impl(in, send_counts, out, recv_counts, false);
  }
  void all_to_all_(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                   const std::vector<int64_t>& recv_counts) override {
    all_to_all_impl(in, send_counts, out, recv_counts, true);
  }

  WorkPtr broadcast(Tensor& t, int root) override {
    const char* opn = "broadcast";
    detail::check_buffer(*this, opn, "tensor", t, false);
    detail::check_peer(*this, opn, "root", root);
    const int n = mpi_count(*this, opn, t);
    return issue(
        false, label(opn), "MPI_Ibcast",
        [&](MPI_Request* req) {
          return MPI_Ibcast(t.raw_data(), n, mpi_type(t.dtype()), root, comm_, req);
        },
        [] {}, {t});
  }

  WorkPtr send(const Tensor& t, int dst, int tag) override {
    const char* opn = "send";
    detail::check_buffer(*this, opn, "tensor", t, false);
    detail::check_peer(*this, opn, "destination", dst);
    check_tag(opn, tag);
    const int n = mpi_count(*this, opn, t);
    return issue(
        false, label(opn, cat(" to rank ", dst, " tag ", tag)), "MPI_Isend",
        [&](MPI_Request* req) {
          return MPI_Isend(t.raw_data(), n, mpi_type(t.dtype()), dst, tag, comm_, req);
        },
        [] {}, {t});
  }

  WorkPtr recv(Tensor& t, int src, int tag) override {
    const char* opn = "recv";
    detail::check_buffer(*this, opn, "tensor", t, false);
    detail::check_peer(*this, opn, "source", src);
    check_tag(opn, tag);
    const int n = mpi_count(*this, opn, t);
    return issue(
        false, label(opn, cat(" from rank ", src, " tag ", tag, " into ", t.describe())),
        "MPI_Irecv",
        [&](MPI_Request* req) {
          return MPI_Irecv(t.raw_data(), n, mpi_type(t.dtype()), src, tag, comm_, req);
        },
        [] {}, {t});
  }

  void barrier() override { KEEL_MPI_CHECK(MPI_Barrier(comm_)); }

  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    KEEL_CHECK(color >= 0, where(*this, "split"), ": color ", color,
               " is negative; colors are non-negative integers");
    MPI_Comm sub = MPI_COMM_NULL;
    KEEL_MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
    return std::make_unique<MpiBackend>(sub, name);
  }

 private:
  Label label(const char* op, std::string extra = {}) const {
    return Label{op, name_, rank_, size_, std::move(extra)};
  }

  // Runs `call` with a request (non-blocking: returns the Work) or without
  // one (blocking: completes, runs `finish`, returns null). The blocking
  // path allocates nothing beyond what MPI does.
  template <typename Call, typename Finish>
  WorkPtr issue(bool blocking, Label what, const char* call_name, Call&& call, Finish&& finish,
                std::initializer_list<Tensor> keep, std::vector<std::vector<int>> arrays = {}) {
    MPI_Request req = MPI_REQUEST_NULL;
    const int rc = call(blocking ? nullptr : &req);
    KEEL_CHECK(rc == MPI_SUCCESS, what.str(), ": ", call_name,
               " failed: ", keel::detail::mpi_error_string(rc));
    if (blocking) {
      finish();
      return nullptr;
    }
    return std::make_unique<MpiWork>(std::move(what), req, std::vector<Tensor>(keep),
                                     std::function<void()>(std::forward<Finish>(finish)),
                                     std::move(arrays));
  }

  WorkPtr all_reduce_impl(Tensor& t, ReduceOp op, bool blocking) {
    const char* opn = "all_reduce";
    detail::check_buffer(*this, opn, "tensor", t, false);
    detail::check_reduce_dtype(*this, opn, t, op);
    const int n = mpi_count(*this, opn, t);
    Tensor buf = is_half(t.dtype()) ? t.to(DType::F32) : t;  // (numel) reduced in f32
    const int size = size_;
    return issue(
        blocking, label(opn), blocking ? "MPI_Allreduce" : "MPI_Iallreduce",
        [&](MPI_Request* req) {
          void* p = buf.raw_data();
          const MPI_Datatype type = mpi_type(buf.dtype());
          return req ? MPI_Iallreduce(MPI_IN_PLACE, p, n, type, mpi_op(op), comm_, req)
                     : MPI_Allreduce(MPI_IN_PLACE, p, n, type, mpi_op(op), comm_);
        },
        [t, buf, op, size]() mutable {
          if (op == ReduceOp::Avg) divide(buf, size);
          if (!buf.same(t)) t.copy_(buf);
        },
        {t, buf});
  }

  WorkPtr reduce_scatter_impl(const Tensor& in, Tensor& out, ReduceOp op, bool blocking) {
    const char* opn = "reduce_scatter";
    detail::check_buffer(*this, opn, "in", in, false);
    detail::check_buffer(*this, opn, "out", out, false);
    detail::check_same_dtype(*this, opn, in, "in", out, "out");
    detail::check_reduce_dtype(*this, opn, out, op);
    KEEL_CHECK(in.numel() == int64_t(size_) * out.numel(), where(*this, opn),
               ": element count mismatch: in (", in.describe(), ") has ", in.numel(),
               " elements, needs size() x out.numel() = ", size_, " x ", out.numel(), " = ",
               int64_t(size_) * out.numel(), " (out ", out.describe(), ")");
    detail::check_disjoint(*this, opn, in, out);
    const int n = mpi_count(*this, opn, out);
    Tensor src = is_half(in.dtype()) ? in.to(DType::F32) : in;     // (size * n)
    Tensor dst = is_half(out.dtype()) ? empty(out.sizes()) : out;  // (n) f32 for 16-bit types
    const int size = size_;
    return issue(
        blocking, label(opn), blocking ? "MPI_Reduce_scatter_block" : "MPI_Ireduce_scatter_block",
        [&](MPI_Request* req) {
          const MPI_Datatype type = mpi_type(src.dtype());
          return req ? MPI_Ireduce_scatter_block(src.raw_data(), dst.raw_data(), n, type,
                                                 mpi_op(op), comm_, req)
                     : MPI_Reduce_scatter_block(src.raw_data(), dst.raw_data(), n, type, mpi_op(op),
                                                comm_);
        },
        [out, dst, op, size]() mutable {
          if (op == ReduceOp::Avg) divide(dst, size);
          if (!dst.same(out)) out.copy_(dst);
        },
        {src, dst, out});
  }

  WorkPtr all_gather_impl(const Tensor& in, Tensor& out, bool blocking) {
    const char* opn = "all_gather";
    detail::check_buffer(*this, opn, "in", in, false);
    detail::check_buffer(*this, opn, "out", out, false);
    detail::check_same_dtype(*this, opn, in, "in", out, "out");
    KEEL_CHECK(out.numel() == int64_t(size_) * in.numel(), where(*this, opn),
               ": element count mismatch: out (", out.describe(), ") has ", out.numel(),
               " elements, needs size() x in.numel() = ", size_, " x ", in.numel(), " = ",
               int64_t(size_) * in.numel(), " (in ", in.describe(), ")");
    const int n = mpi_count(*this, opn, in);
    // `in` may be this rank's own chunk of `out`: then MPI gathers in place.
    const bool in_place =
        in.storage() == out.storage() &&
        static_cast<char*>(in.raw_data()) ==
            static_cast<char*>(out.raw_data()) + int64_t(rank_) * n * int64_t(in.element_size());
    if (!in_place) detail::check_disjoint(*this, opn, in, out);
    return issue(
        blocking, label(opn), blocking ? "MPI_Allgather" : "MPI_Iallgather",
        [&](MPI_Request* req) {
          const MPI_Datatype type = mpi_type(in.dtype());
          const void* src = in_place ? MPI_IN_PLACE : in.raw_data();
          return req ? MPI_Iallgather(src, n, type, out.raw_data(), n, type, comm_, req)
                     : MPI_Allgather(src, n, type, out.raw_data(), n, type, comm_);
        },
        [] {}, {in, out});
  }

  WorkPtr all_to_all_impl(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                          const std::vector<int64_t>& recv_counts, bool blocking) {
    const char* opn = "all_to_all";
    detail::check_buffer(*this, opn, "in", in, false);
    detail::check_buffer(*this, opn, "out", out, false);
    detail::check_same_dtype(*this, opn, in, "in", out, "out");
    detail::check_counts(*this, opn, "send_counts", send_counts, in, true);
    detail::check_counts(*this, opn, "recv_counts", recv_counts, out, true);
    detail::check_disjoint(*this, opn, in, out);
    // MPI reads these arrays until the exchange completes: the Work keeps
    // them (moving the vectors keeps their storage where MPI saw it).
    std::vector<std::vector<int>> arrays(4, std::vector<int>(size_t(size_)));
    for (int r = 0, soff = 0, roff = 0; r < size_; ++r) {
      arrays[0][size_t(r)] = int(send_counts[size_t(r)]);
      arrays[1][size_t(r)] = soff;
      arrays[2][size_t(r)] = int(recv_counts[size_t(r)]);
      arrays[3][size_t(r)] = roff;
      soff += int(send_counts[size_t(r)]);
      roff += int(recv_counts[size_t(r)]);
    }
    const MPI_Datatype type = mpi_type(in.dtype());
    const int *sc = arrays[0].data(), *sd = arrays[1].data();
    const int *rc = arrays[2].data(), *rd = arrays[3].data();
    return issue(
        blocking, label(opn), blocking ? "MPI_Alltoallv" : "MPI_Ialltoallv",
        [&](MPI_Request* req) {
          return req ? MPI_Ialltoallv(in.raw_data(), sc, sd, type, out.raw_data(), rc, rd, type,
                                      comm_, req)
                     : MPI_Alltoallv(in.raw_data(), sc, sd, type, out.raw_data(), rc, rd, type,
                                     comm_);
        },
        [] {}, {in, out}, std::move(arrays));
  }

  void check_tag(const char* op, int tag) const {
    KEEL_CHECK(tag >= 0 && tag <= tag_ub_, where(*this, op), ": tag ", tag,
               " is outside MPI's range 0..", tag_ub_);
  }

  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  int tag_ub_ = 32767;
};

}  // namespace

std::unique_ptr<Communicator> mpi_world() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  KEEL_CHECK(initialized, "mpi_world: MPI is not initialised; call keel::parallel::init_mpi first");
  MPI_Comm dup = MPI_COMM_NULL;
  KEEL_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  return std::make_unique<MpiBackend>(dup, "world");
}

void init_mpi(int* argc, char*** argv) {
  int initialized = 0;
  KEEL_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    KEEL_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    KEEL_CHECK(provided >= MPI_THREAD_FUNNELED, "init_mpi: the MPI library gives thread level ",
               provided, ", keel needs MPI_THREAD_FUNNELED (", int(MPI_THREAD_FUNNELED), ")");
  }
  int rank = 0;
  KEEL_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  set_error_rank(rank);
}

void finalize_mpi() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) KEEL_MPI_CHECK(MPI_Finalize());
}

}  // namespace keel::parallel
