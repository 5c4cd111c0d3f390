// Communicator: collectives over a group of ranks, on tensors. Two backends
// behind one interface: MPI for host tensors, NCCL for device tensors (built
// with CUDA and NCCL; its unique id travels over MPI). Every call returns a
// Work handle to wait on, so communication can overlap compute; the blocking
// forms are the async ones followed by wait(). Communicators are passed
// explicitly (a Mesh owns one per axis); there is no global instance.
#pragma once

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
  virtual WorkPtr all_to_all(const Tensor& in, const std::vector<int64_t>& send_counts,
                             Tensor& out, const std::vector<int64_t>& recv_counts) = 0;
  virtual void barrier() = 0;

  // Splits this group: ranks with the same color form a new communicator,
  // ordered by key (MPI_Comm_split semantics).
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  // Blocking conveniences.
  void all_reduce_(Tensor& t, ReduceOp op = ReduceOp::Sum) { all_reduce(t, op)->wait(); }
};

// The MPI world (MPI must be initialised; see init_mpi). Errors return codes
// (MPI_ERRORS_RETURN) that become keel::Error with the rank.
std::unique_ptr<Communicator> mpi_world();

// MPI_Init_thread if not yet done, and set_error_rank. Safe to call twice.
void init_mpi(int* argc, char*** argv);
void finalize_mpi();

}  // namespace keel::parallel
