// Communicator: collectives over a group of ranks, on tensors. Two backends
// behind one interface: MPI for host tensors, NCCL for device tensors (built
// with CUDA and NCCL; its unique id travels over MPI). Every call returns a
// Work handle to wait on, so communication can overlap compute; the blocking
// conveniences (all_reduce_, ...) complete before returning. Communicators are passed
// explicitly (a Mesh owns one per axis); there is no global instance.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace keel::parallel {

enum class ReduceOp { Sum, Avg, Max };

// A pending operation. wait() blocks until its buffers may be read/reused;
// it is idempotent. Destroying an unfinished Work waits for it.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  virtual bool done() = 0;  // non-blocking test
};
using WorkPtr = std::unique_ptr<Work>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // e.g. "world", "dp", "tp" (for messages)
  // Where this backend's buffers live: the host (MPI) or its CUDA device (NCCL).
  virtual Device device() const { return Device::cpu(); }

  // In place on `t` (contiguous). Avg divides by size() after summing.
  virtual WorkPtr all_reduce(Tensor& t, ReduceOp op) = 0;
  // in: size() * out.numel() elements (contiguous); out gets this rank's
  // reduced chunk (chunk r = elements [r*n, (r+1)*n) of in).
  virtual WorkPtr reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) = 0;
  // out: size() * in.numel() elements; chunk r comes from rank r.
  virtual WorkPtr all_gather(const Tensor& in, Tensor& out) = 0;
  virtual WorkPtr broadcast(Tensor& t, int root) = 0;
  virtual WorkPtr send(const Tensor& t, int dst, int tag = 0) = 0;
  virtual WorkPtr recv(Tensor& t, int src, int tag = 0) = 0;
  // Per-rank counts in elements: send_counts[r] elements of `in` go to rank r
  // (in rank order), recv_counts[r] elements of `out` come from rank r.
  virtual WorkPtr all_to_all(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                             const std::vector<int64_t>& recv_counts) = 0;
  virtual void barrier() = 0;

  // Splits this group: ranks with the same color form a new communicator,
  // ordered by key (MPI_Comm_split semantics).
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  // Blocking conveniences: complete before returning. The defaults post and
  // wait; a backend may run a blocking call instead where that is faster
  // (the MPI backend does: Open MPI's blocking collectives have tuned
  // algorithms its non-blocking ones lack, see bench/README.md). Callers
  // that wait at once (the differentiable collectives) use these.
  virtual void all_reduce_(Tensor& t, ReduceOp op = ReduceOp::Sum) { all_reduce(t, op)->wait(); }
  virtual void reduce_scatter_(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum) {
    reduce_scatter(in, out, op)->wait();
  }
  virtual void all_gather_(const Tensor& in, Tensor& out) { all_gather(in, out)->wait(); }
  virtual void all_to_all_(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                           const std::vector<int64_t>& recv_counts) {
    all_to_all(in, send_counts, out, recv_counts)->wait();
  }
};

// The MPI backend's communicators (mpi_world() and what their split()
// returns) expose the MPI_Comm behind them, for libraries that take one
// (parallel HDF5 checkpoints). The communicator keeps ownership.
class MpiCommunicator : public Communicator {
 public:
  virtual MPI_Comm native_handle() const = 0;
};

// The MPI world (MPI must be initialised; see init_mpi): a fresh
// MPI_Comm_dup of MPI_COMM_WORLD on every call (collective), named "world".
// Errors return codes (MPI_ERRORS_RETURN) that become keel::Error with the
// rank. Host tensors only; bf16/f16 reductions are summed in f32 and rounded
// once. A Work must not outlive its communicator.
std::unique_ptr<Communicator> mpi_world();

// A world of one that needs no MPI (a single process): collectives complete
// at once as copies, send/recv are refused (there is no peer), split gives
// another world of one. Its buffers live on `device`.
std::unique_ptr<Communicator> local_world(Device device = Device::cpu(),
                                          const std::string& name = "world");

// MPI_Init_thread(MPI_THREAD_FUNNELED) if not yet done, and set_error_rank.
// FUNNELED: only the thread that initialised MPI calls it (OpenMP workers
// never do). Safe to call twice. finalize_mpi is a no-op when MPI is not
// initialised or already finalised.
void init_mpi(int* argc, char*** argv);
void finalize_mpi();

// The NCCL backend for tensors on CUDA device `device` (built with CUDA and
// NCCL; otherwise throws keel::Error). Collective over `mpi`, which carries
// the NCCL unique id; the result covers the same ranks in the same order and
// keeps its own duplicate of `mpi` (for split and barrier). Work runs on the
// communicator's own stream, ordered by an event after the work already on
// the device's current stream (keel::cuda::current_stream); Work::wait makes
// the current stream wait for the result without blocking the host. Buffers
// stay referenced until the device has finished with them. send/recv
// are batched into one NCCL group that starts at the next wait/done of any
// of them or the next other call, so a ring of sends and receives cannot
// deadlock; NCCL has no tags, so messages between two ranks match in order.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi, int device);

// Argument checks shared by the backends: each throws keel::Error naming the
// operation, the communicator and what was wrong.
namespace detail {
// `t` usable as a buffer: defined, contiguous, on the backend's device
// (want_cuda: CUDA device `device`; else the host).
void check_buffer(const Communicator& c, const char* op, const char* role, const Tensor& t,
                  bool want_cuda, int device = 0);
void check_same_dtype(const Communicator& c, const char* op, const Tensor& a, const char* a_role,
                      const Tensor& b, const char* b_role);
// Avg needs a floating dtype (an integer mean would silently truncate).
void check_reduce_dtype(const Communicator& c, const char* op, const Tensor& t, ReduceOp rop);
void check_peer(const Communicator& c, const char* op, const char* role, int peer);
// counts.size() == c.size(), each >= 0 (and <= INT_MAX when int_counts), sum == numel.
void check_counts(const Communicator& c, const char* op, const char* role,
                  const std::vector<int64_t>& counts, const Tensor& t, bool int_counts);
// `in` and `out` share no bytes.
void check_disjoint(const Communicator& c, const char* op, const Tensor& in, const Tensor& out);
// "all_reduce on communicator 'tp' (rank 1 of 2)", the start of every message.
std::string where(const Communicator& c, const char* op);
}  // namespace detail

}  // namespace keel::parallel
