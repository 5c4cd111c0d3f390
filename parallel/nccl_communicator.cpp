// The NCCL backend: collectives on tensors of one CUDA device. Built only
// with CUDA and NCCL (KEEL_WITH_CUDA, KEEL_WITH_NCCL); the factory's stand-in
// without them is in communicator.cpp.
//
// Ordering without host syncs: each call records an event on the caller's
// stream (the device's current stream, keel::cuda::current_stream, where
// keel launches its kernels and copies), makes the communicator's own
// non-blocking stream wait for it, enqueues the NCCL call there and records
// a completion event. Work::wait makes the stream current at that moment
// wait for the event; Work::done queries it. Buffers stay referenced
// until the completion event has fired: a Work destroyed earlier hands them
// to the communicator's state, which drops them once their event completes
// (what record_stream does in PyTorch), so a stream-ordered allocator can
// never hand the memory out while NCCL still uses it.
//
// send/recv collect into one pending NCCL group, started by the next wait or
// done of any of them or by the next other call: posting a ring of sends and
// receives one by one on a single stream would otherwise deadlock.
#if defined(KEEL_WITH_NCCL) && defined(KEEL_WITH_CUDA)

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstring>

#include "core/cuda/check.h"
#include "core/cuda/stream.h"
#include "parallel/check.h"
#include "parallel/communicator.h"

namespace keel::parallel {

namespace {

using detail::where;
using keel::detail::cat;

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::F16:
      return ncclFloat16;
    case DType::I32:
      return ncclInt32;
    case DType::I64:
      return ncclInt64;
    case DType::U8:
      return ncclUint8;
  }
  KEEL_ASSERT(false, "unknown dtype");
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return ncclSum;
    case ReduceOp::Avg:
      return ncclAvg;
    case ReduceOp::Max:
      return ncclMax;
  }
  KEEL_ASSERT(false, "unknown reduce op");
  return ncclSum;
}

// Where keel's kernels and copies on `device` run.
cudaStream_t caller_stream(int device) { return keel::cuda::current_stream(device); }

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    KEEL_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) KEEL_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

cudaEvent_t new_event() {
  cudaEvent_t e = nullptr;
  KEEL_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

// The completion event of one launch (one collective, or one p2p group).
struct Completion {
  cudaEvent_t event = nullptr;
  bool launched = false;
  Completion() : event(new_event()) {}
  ~Completion() {
    if (event) cudaEventDestroy(event);
  }
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;
};

// What outlives the Communicator object while any Work still refers to it:
// the NCCL communicator, the stream and buffers in flight.
struct NcclState {
  int device = 0;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;

  struct P2p {
    bool is_send;
    Tensor t;
    int peer;
  };
  std::vector<P2p> pending;                  // posted, not yet launched
  std::shared_ptr<Completion> pending_done;  // shared by the pending p2p Works
  cudaEvent_t pending_ready = nullptr;       // caller's stream at the last post

  struct Deferred {
    std::shared_ptr<Completion> done;
    std::vector<Tensor> buffers;
  };
  std::vector<Deferred> deferred;  // buffers of destroyed Works still in use on the device

  ~NcclState() {
    // Destructors cannot throw: failures here are reported, not raised.
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device);
    if (stream) cudaStreamSynchronize(stream);
    deferred.clear();
    if (pending_ready) cudaEventDestroy(pending_ready);
    if (comm) {
      ncclResult_t rc = ncclCommDestroy(comm);
      if (rc != ncclSuccess)
        std::fprintf(stderr, "keel: ncclCommDestroy failed: %s\n", ncclGetErrorString(rc));
    }
    if (stream) cudaStreamDestroy(stream);
    cudaSetDevice(prev);
  }

  // Orders this communicator's stream after everything already enqueued on
  // the caller's stream.
  void after_caller() {
    cudaEvent_t ready = new_event();
    KEEL_CUDA_CHECK(cudaEventRecord(ready, caller_stream(device)));
    KEEL_CUDA_CHECK(cudaStreamWaitEvent(stream, ready, 0));
    KEEL_CUDA_CHECK(cudaEventDestroy(ready));  // released once the wait has passed it
  }

  // Launches the pending sends and receives as one NCCL group.
  void flush() {
    if (pending.empty()) return;
    DeviceGuard guard(device);
    std::vector<P2p> ops = std::move(pending);
    pending.clear();
    std::shared_ptr<Completion> done = std::move(pending_done);
    pending_done.reset();
    cudaEvent_t ready = pending_ready;
    pending_ready = nullptr;
    KEEL_CUDA_CHECK(cudaStreamWaitEvent(stream, ready, 0));
    KEEL_CUDA_CHECK(cudaEventDestroy(ready));
    KEEL_NCCL_CHECK(ncclGroupStart());
    for (const P2p& op : ops) {
      if (op.is_send)
        KEEL_NCCL_CHECK(ncclSend(op.t.raw_data(), size_t(op.t.numel()), nccl_type(op.t.dtype()),
                                 op.peer, comm, stream));
      else
        KEEL_NCCL_CHECK(ncclRecv(op.t.raw_data(), size_t(op.t.numel()), nccl_type(op.t.dtype()),
                                 op.peer, comm, stream));
    }
    KEEL_NCCL_CHECK(ncclGroupEnd());
    KEEL_CUDA_CHECK(cudaEventRecord(done->event, stream));
    done->launched = true;
  }

  // Drops the buffers whose device work has finished.
  void reap() {
    std::erase_if(deferred, [](const Deferred& d) {
      cudaError_t q = cudaEventQuery(d.done->event);
      if (q == cudaErrorNotReady) return false;
      KEEL_CUDA_CHECK(q);
      return true;
    });
  }
};

class NcclWork final : public Work {
 public:
  NcclWork(std::string what, std::shared_ptr<NcclState> state, std::shared_ptr<Completion> done,
           std::vector<Tensor> buffers)
      : what_(std::move(what)),
        state_(std::move(state)),
        done_(std::move(done)),
        buffers_(std::move(buffers)) {}

  ~NcclWork() override {
    try {
      wait();
      if (!buffers_.empty()) {
        cudaError_t q = cudaEventQuery(done_->event);
        if (q == cudaErrorNotReady)
          state_->deferred.push_back({done_, std::move(buffers_)});
        else
          KEEL_CUDA_CHECK(q);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "keel: unfinished %s failed while being destroyed: %s\n", what_.c_str(),
                   e.what());
    }
  }

  void wait() override {
    if (waited_) return;
    if (!done_->launched) state_->flush();
    DeviceGuard guard(state_->device);
    KEEL_CUDA_CHECK(cudaStreamWaitEvent(caller_stream(state_->device), done_->event, 0));
    waited_ = true;
  }

  bool done() override {
    if (!done_->launched) state_->flush();
    cudaError_t q = cudaEventQuery(done_->event);
    if (q == cudaErrorNotReady) return false;
    KEEL_CHECK(q == cudaSuccess, what_, " failed: ", cudaGetErrorString(q));
    buffers_.clear();
    return true;
  }

 private:
  std::string what_;
  std::shared_ptr<NcclState> state_;
  std::shared_ptr<Completion> done_;
  std::vector<Tensor> buffers_;
  bool waited_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  // `mpi` is this communicator's own MPI group (for the unique id, split, barrier).
  NcclCommunicator(std::unique_ptr<Communicator> mpi, int device)
      : mpi_(std::move(mpi)), state_(std::make_shared<NcclState>()) {
    KEEL_CHECK(device >= 0 && device < cuda_device_count(), where(*mpi_, "make_nccl_communicator"),
               ": cuda:", device, " is not available (", cuda_device_count(),
               " CUDA devices visible)");
    state_->device = device;
    DeviceGuard guard(device);
    ncclUniqueId id;
    std::memset(&id, 0, sizeof(id));
    if (mpi_->rank() == 0) KEEL_NCCL_CHECK(ncclGetUniqueId(&id));
    Tensor id_bytes = zeros({int64_t(sizeof(id))}, DType::U8);  // (sizeof(ncclUniqueId)) host
    std::memcpy(id_bytes.raw_data(), &id, sizeof(id));
    mpi_->broadcast(id_bytes, 0)->wait();
    std::memcpy(&id, id_bytes.raw_data(), sizeof(id));
    KEEL_CUDA_CHECK(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking));
    KEEL_NCCL_CHECK(ncclCommInitRank(&state_->comm, mpi_->size(), id, mpi_->rank()));
  }

  ~NcclCommunicator() override {
    try {
      state_->flush();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "keel: NCCL communicator '%s' could not start pending sends: %s\n",
                   mpi_->name().c_str(), e.what());
    }
  }

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  std::string name() const override { return mpi_->name(); }
  Device device() const override { return Device::cuda(state_->device); }

  WorkPtr all_reduce(Tensor& t, ReduceOp op) override {
    const char* opn = "all_reduce";
    check(opn, "tensor", t);
    detail::check_reduce_dtype(*this, opn, t, op);
    return launch(opn, {t}, [&](ncclComm_t comm, cudaStream_t s) {
      KEEL_NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()),
                                    nccl_type(t.dtype()), nccl_op(op), comm, s));
    });
  }

  WorkPtr reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    const char* opn = "reduce_scatter";
    check(opn, "in", in);
    check(opn, "out", out);
    detail::check_same_dtype(*this, opn, in, "in", out, "out");
    detail::check_reduce_dtype(*this, opn, out, op);
    KEEL_CHECK(in.numel() == int64_t(size()) * out.numel(), where(*this, opn),
               ": element count mismatch: in (", in.describe(), ") has ", in.numel(),
               " elements, needs size() x out.numel() = ", size(), " x ", out.numel(), " = ",
               int64_t(size()) * out.numel(), " (out ", out.describe(), ")");
    detail::check_disjoint(*this, opn, in, out);
    return launch(opn, {in, out}, [&](ncclComm_t comm, cudaStream_t s) {
      KEEL_NCCL_CHECK(ncclReduceScatter(in.raw_data(), out.raw_data(), size_t(out.numel()),
                                        nccl_type(in.dtype()), nccl_op(op), comm, s));
    });
  }

  WorkPtr all_gather(const Tensor& in, Tensor& out) override {
    const char* opn = "all_gather";
    check(opn, "in", in);
    check(opn, "out", out);
    detail::check_same_dtype(*this, opn, in, "in", out, "out");
    KEEL_CHECK(out.numel() == int64_t(size()) * in.numel(), where(*this, opn),
               ": element count mismatch: out (", out.describe(), ") has ", out.numel(),
               " elements, needs size() x in.numel() = ", size(), " x ", in.numel(), " = ",
               int64_t(size()) * in.numel(), " (in ", in.describe(), ")");
    // NCCL gathers in place when `in` is this rank's chunk of `out`.
    const bool in_place = in.storage() == out.storage() &&
                          static_cast<char*>(in.raw_data()) ==
                              static_cast<char*>(out.raw_data()) +
                                  int64_t(rank()) * in.numel() * int64_t(in.element_size());
    if (!in_place) detail::check_disjoint(*this, opn, in, out);
    return launch(opn, {in, out}, [&](ncclComm_t comm, cudaStream_t s) {
      KEEL_NCCL_CHECK(ncclAllGather(in.raw_data(), out.raw_data(), size_t(in.numel()),
                                    nccl_type(in.dtype()), comm, s));
    });
  }

  WorkPtr broadcast(Tensor& t, int root) override {
    const char* opn = "broadcast";
    check(opn, "tensor", t);
    detail::check_peer(*this, opn, "root", root);
    return launch(opn, {t}, [&](ncclComm_t comm, cudaStream_t s) {
      KEEL_NCCL_CHECK(ncclBroadcast(t.raw_data(), t.raw_data(), size_t(t.numel()),
                                    nccl_type(t.dtype()), root, comm, s));
    });
  }

  WorkPtr send(const Tensor& t, int dst, int tag) override {
    check("send", "tensor", t);
    detail::check_peer(*this, "send", "destination", dst);
    return post_p2p(true, t, dst, cat(where(*this, "send"), " to rank ", dst, " tag ", tag));
  }

  WorkPtr recv(Tensor& t, int src, int tag) override {
    check("recv", "tensor", t);
    detail::check_peer(*this, "recv", "source", src);
    return post_p2p(false, t, src, cat(where(*this, "recv"), " from rank ", src, " tag ", tag));
  }

  WorkPtr all_to_all(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                     const std::vector<int64_t>& recv_counts) override {
    const char* opn = "all_to_all";
    check(opn, "in", in);
    check(opn, "out", out);
    detail::check_same_dtype(*this, opn, in, "in", out, "out");
    detail::check_counts(*this, opn, "send_counts", send_counts, in, false);
    detail::check_counts(*this, opn, "recv_counts", recv_counts, out, false);
    detail::check_disjoint(*this, opn, in, out);
    const ncclDataType_t type = nccl_type(in.dtype());
    const size_t es = in.element_size();
    return launch(opn, {in, out}, [&](ncclComm_t comm, cudaStream_t s) {
      char* src = static_cast<char*>(in.raw_data());
      char* dst = static_cast<char*>(out.raw_data());
      KEEL_NCCL_CHECK(ncclGroupStart());
      for (int r = 0; r < size(); ++r) {
        const size_t ns = size_t(send_counts[size_t(r)]), nr = size_t(recv_counts[size_t(r)]);
        if (ns > 0) KEEL_NCCL_CHECK(ncclSend(src, ns, type, r, comm, s));
        if (nr > 0) KEEL_NCCL_CHECK(ncclRecv(dst, nr, type, r, comm, s));
        src += ns * es;
        dst += nr * es;
      }
      KEEL_NCCL_CHECK(ncclGroupEnd());
    });
  }

  // Every rank has reached the barrier and this communicator's device work
  // posted so far has finished (a host sync, outside the collective path).
  void barrier() override {
    state_->flush();
    {
      DeviceGuard guard(state_->device);
      KEEL_CUDA_CHECK(cudaStreamSynchronize(state_->stream));
    }
    mpi_->barrier();
  }

  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    state_->flush();
    return std::make_unique<NcclCommunicator>(mpi_->split(color, key, name), state_->device);
  }

 private:
  void check(const char* op, const char* role, const Tensor& t) const {
    detail::check_buffer(*this, op, role, t, true, state_->device);
  }

  template <typename F>
  WorkPtr launch(const char* op, std::vector<Tensor> buffers, F&& body) {
    state_->flush();  // keep posting order: earlier sends/receives first
    state_->reap();
    DeviceGuard guard(state_->device);
    auto done = std::make_shared<Completion>();
    state_->after_caller();
    body(state_->comm, state_->stream);
    KEEL_CUDA_CHECK(cudaEventRecord(done->event, state_->stream));
    done->launched = true;
    return std::make_unique<NcclWork>(where(*this, op), state_, std::move(done),
                                      std::move(buffers));
  }

  WorkPtr post_p2p(bool is_send, const Tensor& t, int peer, std::string what) {
    state_->reap();
    DeviceGuard guard(state_->device);
    if (!state_->pending_done) state_->pending_done = std::make_shared<Completion>();
    // The group waits for the caller's stream as of the latest post.
    if (!state_->pending_ready) state_->pending_ready = new_event();
    KEEL_CUDA_CHECK(cudaEventRecord(state_->pending_ready, caller_stream(state_->device)));
    state_->pending.push_back({is_send, t, peer});
    return std::make_unique<NcclWork>(std::move(what), state_, state_->pending_done,
                                      std::vector<Tensor>{t});
  }

  std::unique_ptr<Communicator> mpi_;
  std::shared_ptr<NcclState> state_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi, int device) {
  // A private duplicate of `mpi`, so that split and barrier never interleave
  // with the caller's own use of it.
  return std::make_unique<NcclCommunicator>(mpi.split(0, mpi.rank(), mpi.name()), device);
}

}  // namespace keel::parallel

#endif  // KEEL_WITH_NCCL && KEEL_WITH_CUDA
