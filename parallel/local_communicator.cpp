// A world of one without MPI: every collective over a single rank is a copy
// or nothing. A single process trains through the same code as a group
// (ParallelContext, gradient sync, checkpoints), with this as its world, so
// there is one path and no `if (parallel)` beside it.
#include "parallel/communicator.h"

namespace keel::parallel {

namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool done() override { return true; }
};

WorkPtr done() { return std::make_unique<DoneWork>(); }

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(std::string name, Device device) : name_(std::move(name)), device_(device) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return name_; }
  Device device() const override { return device_; }

  WorkPtr all_reduce(Tensor& t, ReduceOp op) override {
    check(t, "all_reduce", "tensor");
    detail::check_reduce_dtype(*this, "all_reduce", t, op);
    return done();  // the sum, mean or max over one rank is the value itself
  }
  WorkPtr reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    check(in, "reduce_scatter", "in");
    check(out, "reduce_scatter", "out");
    detail::check_same_dtype(*this, "reduce_scatter", in, "in", out, "out");
    detail::check_reduce_dtype(*this, "reduce_scatter", out, op);
    return copy(in, out, "reduce_scatter");
  }
  WorkPtr all_gather(const Tensor& in, Tensor& out) override {
    check(in, "all_gather", "in");
    check(out, "all_gather", "out");
    detail::check_same_dtype(*this, "all_gather", in, "in", out, "out");
    return copy(in, out, "all_gather");
  }
  WorkPtr broadcast(Tensor& t, int root) override {
    check(t, "broadcast", "tensor");
    detail::check_peer(*this, "broadcast", "root", root);
    return done();
  }
  WorkPtr send(const Tensor&, int, int) override {
    KEEL_FAIL(detail::where(*this, "send"), ": a world of one has no peer to send to");
  }
  WorkPtr recv(Tensor&, int, int) override {
    KEEL_FAIL(detail::where(*this, "recv"), ": a world of one has no peer to receive from");
  }
  WorkPtr all_to_all(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                     const std::vector<int64_t>& recv_counts) override {
    check(in, "all_to_all", "in");
    check(out, "all_to_all", "out");
    detail::check_same_dtype(*this, "all_to_all", in, "in", out, "out");
    detail::check_counts(*this, "all_to_all", "send_counts", send_counts, in, false);
    detail::check_counts(*this, "all_to_all", "recv_counts", recv_counts, out, false);
    return copy(in, out, "all_to_all");
  }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int, const std::string& name) override {
    return std::make_unique<LocalCommunicator>(name, device_);
  }

 private:
  void check(const Tensor& t, const char* op, const char* role) const {
    detail::check_buffer(*this, op, role, t, device_.is_cuda(), device_.index);
  }
  WorkPtr copy(const Tensor& in, Tensor& out, const char* op) {
    KEEL_CHECK(in.numel() == out.numel(), detail::where(*this, op), ": in has ", in.numel(),
               " elements but out has ", out.numel(), " (one rank: they must match)");
    if (!in.same(out)) out.view({in.numel()}).copy_(in.view({in.numel()}));
    return done();
  }

  std::string name_;
  Device device_;
};

}  // namespace

std::unique_ptr<Communicator> local_world(Device device, const std::string& name) {
  return std::make_unique<LocalCommunicator>(name, device);
}

}  // namespace keel::parallel
