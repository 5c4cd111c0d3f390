// Argument checks shared by the MPI and NCCL backends, and the NCCL factory's
// stand-in when keel is built without NCCL. The backends themselves live in
// mpi_communicator.cpp and nccl_communicator.cpp.
#include "parallel/communicator.h"

#include <climits>
#include <cstdint>

namespace keel::parallel {

namespace detail {

using keel::detail::cat;

std::string where(const Communicator& c, const char* op) {
  return cat(op, " on communicator '", c.name(), "' (rank ", c.rank(), " of ", c.size(), ")");
}

void check_buffer(const Communicator& c, const char* op, const char* role, const Tensor& t,
                  bool want_cuda, int device) {
  KEEL_CHECK(t.defined(), where(c, op), ": ", role, " is an undefined tensor");
  if (want_cuda) {
    KEEL_CHECK(t.device().is_cuda(), where(c, op), " (NCCL backend): ", role, " (", t.describe(),
               ") is on the host; host tensors need the MPI backend (mpi_world, Mesh)");
    KEEL_CHECK(t.device().index == device, where(c, op), " (NCCL backend): ", role, " (",
               t.describe(), ") is not on cuda:", device, ", the device this communicator drives");
  } else {
    KEEL_CHECK(t.device().is_cpu(), where(c, op), " (MPI backend): ", role, " (", t.describe(),
               ") is a device tensor; device tensors need the NCCL backend "
               "(make_nccl_communicator)");
  }
  KEEL_CHECK(t.is_contiguous(), where(c, op), ": ", role, " (", t.describe(), ", strides ",
             shape_str(t.strides()),
             ") is not contiguous; collectives work on dense memory: pass a .contiguous() copy "
             "(and copy the result back for in-place operations)");
}

void check_same_dtype(const Communicator& c, const char* op, const Tensor& a, const char* a_role,
                      const Tensor& b, const char* b_role) {
  KEEL_CHECK(a.dtype() == b.dtype(), where(c, op), ": dtype mismatch: ", a_role, " is ",
             dtype_name(a.dtype()), ", ", b_role, " is ", dtype_name(b.dtype()));
}

void check_reduce_dtype(const Communicator& c, const char* op, const Tensor& t, ReduceOp rop) {
  KEEL_CHECK(rop != ReduceOp::Avg || is_floating(t.dtype()), where(c, op),
             ": ReduceOp::Avg needs a floating dtype, got ", t.describe(),
             " (an integer mean would truncate; reduce with Sum and divide)");
}

void check_peer(const Communicator& c, const char* op, const char* role, int peer) {
  KEEL_CHECK(peer >= 0 && peer < c.size(), where(c, op), ": ", role, " ", peer,
             " is not a rank of this communicator (ranks 0..", c.size() - 1, ")");
}

void check_counts(const Communicator& c, const char* op, const char* role,
                  const std::vector<int64_t>& counts, const Tensor& t, bool int_counts) {
  KEEL_CHECK(int64_t(counts.size()) == c.size(), where(c, op), ": ", role, " has ", counts.size(),
             " entries, the communicator has ", c.size(), " ranks");
  int64_t sum = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    KEEL_CHECK(counts[r] >= 0, where(c, op), ": ", role, "[", r, "] = ", counts[r], " is negative");
    KEEL_CHECK(!int_counts || counts[r] <= INT_MAX, where(c, op), ": ", role, "[", r,
               "] = ", counts[r], " elements exceeds MPI's int count limit (", INT_MAX,
               "); split the exchange into smaller ones");
    sum += counts[r];
  }
  KEEL_CHECK(!int_counts || sum <= INT_MAX, where(c, op), ": ", role, " sum to ", sum,
             " elements, beyond MPI's int displacement limit (", INT_MAX,
             "); split the exchange into smaller ones");
  KEEL_CHECK(sum == t.numel(), where(c, op), ": element count mismatch: ", role, " sum to ", sum,
             " elements but the tensor (", t.describe(), ") has ", t.numel());
}

void check_disjoint(const Communicator& c, const char* op, const Tensor& in, const Tensor& out) {
  if (in.numel() == 0 || out.numel() == 0 || in.storage() != out.storage()) return;
  auto lo_a = reinterpret_cast<uintptr_t>(in.raw_data());
  auto hi_a = lo_a + uintptr_t(in.numel()) * in.element_size();
  auto lo_b = reinterpret_cast<uintptr_t>(out.raw_data());
  auto hi_b = lo_b + uintptr_t(out.numel()) * out.element_size();
  KEEL_CHECK(hi_a <= lo_b || hi_b <= lo_a, where(c, op), ": in (", in.describe(), ") and out (",
             out.describe(), ") overlap in memory; use separate buffers");
}

}  // namespace detail

#if !(defined(KEEL_WITH_NCCL) && defined(KEEL_WITH_CUDA))
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi, int device) {
  KEEL_FAIL("make_nccl_communicator(", mpi.name(), ", cuda:", device,
            "): keel was built without NCCL (configure with -DKEEL_CUDA=ON on a machine with "
            "CUDA and NCCL); host tensors use the MPI communicator");
}
#endif

}  // namespace keel::parallel
