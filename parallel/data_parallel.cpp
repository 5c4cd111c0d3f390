// Gradient buckets and their reductions; see data_parallel.h.
#include "parallel/data_parallel.h"

#include <algorithm>
#include <cstring>
#include <exception>

#include "autograd/autograd.h"

namespace keel::parallel {

using keel::detail::cat;

FlatLayout::FlatLayout(const NamedParams& params, int world_size) : world(world_size) {
  KEEL_CHECK(world >= 1, "FlatLayout: world size must be >= 1, got ", world);
  for (const auto& [name, p] : params) {
    offset.push_back(total);
    numel.push_back(p.numel());
    total += p.numel();
  }
  padded = (total + world - 1) / world * world;
  shard = padded / world;
}

std::pair<int64_t, int64_t> FlatLayout::piece(size_t i, int rank) const {
  const int64_t lo = std::max(offset[i], int64_t(rank) * shard);
  const int64_t hi = std::min(offset[i] + numel[i], int64_t(rank + 1) * shard);
  if (hi <= lo) return {0, 0};
  return {lo - offset[i], hi - offset[i]};
}

namespace {

struct Bucket {
  std::vector<size_t> params;  // indices into State::params
  std::vector<int64_t> slots;  // where each parameter's gradient starts in `buffer`
  int64_t numel = 0;           // gradient elements; the flags follow them
  Tensor buffer;               // (numel + params.size()) f32
  size_t pending = 0;          // gradients still to arrive this step
  bool launched = false;
  WorkPtr work;
};

}  // namespace

struct GradientSync::State {
  Communicator* comm = nullptr;
  NamedParams params;
  GradientSyncOptions options;
  FlatLayout layout;

  // AllReduce mode.
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;  // parameter -> bucket
  std::vector<size_t> index_in_bucket;
  size_t next_launch = 0;  // buckets launch strictly in order, the same on every rank

  // ReduceScatter mode: the flat gradient, one has-gradient flag per
  // parameter (all-reduced alongside), and this rank's averaged shard.
  Tensor flat;        // (padded) f32
  Tensor flags;       // (params) f32
  Tensor shard_grad;  // (shard) f32
  size_t pending_all = 0;
  bool flat_launched = false;
  WorkPtr flat_work, flag_work;

  std::vector<char> ready;     // parameter's gradient copied in this step
  std::vector<char> has_grad;  // after finish(): some rank had a gradient
  bool sync = false;
  bool in_flight = false;  // a hook copied a gradient since the last finish()
  bool finished_once = false;

  bool scatter() const { return options.reduction == GradReduction::ReduceScatter; }

  Tensor slot(size_t i) {
    const Tensor& p = params[i].second;
    if (scatter()) return flat.narrow(0, layout.offset[i], p.numel()).view(p.sizes());
    Bucket& b = buckets[bucket_of[i]];
    return b.buffer.narrow(0, b.slots[index_in_bucket[i]], p.numel()).view(p.sizes());
  }
  // Parameter i's has-gradient flag, (1) f32 on the buffers' device.
  Tensor flag(size_t i) {
    if (scatter()) return flags.narrow(0, int64_t(i), 1);
    Bucket& b = buckets[bucket_of[i]];
    return b.buffer.narrow(0, b.numel + int64_t(index_in_bucket[i]), 1);
  }

  // Copies parameter i's gradient (or zeros when it has none) into its slot.
  void fill(size_t i) {
    Tensor dst = slot(i);
    Tensor g = params[i].second.grad();
    if (g.defined()) {
      dst.copy_(g);
      flag(i).fill_(1.0);
    } else {
      dst.zero_();
      flag(i).fill_(0.0);
    }
  }

  void launch_bucket(Bucket& b) {
    b.work = comm->all_reduce(b.buffer, ReduceOp::Avg);
    b.launched = true;
  }

  // Starts every bucket that is complete and next in order.
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0)
      launch_bucket(buckets[next_launch++]);
  }

  void launch_flat() {
    // The padding is zero on every rank (ShardedAdamW gathers into this buffer).
    if (layout.padded > layout.total)
      flat.narrow(0, layout.total, layout.padded - layout.total).zero_();
    flat_work = comm->reduce_scatter(flat, shard_grad, ReduceOp::Avg);
    flag_work = comm->all_reduce(flags, ReduceOp::Avg);
    flat_launched = true;
  }

  // Non-blocking MPI collectives advance only inside MPI calls: a test per
  // hook lets launched buckets progress while backward computes.
  void progress() {
    for (size_t k = 0; k < next_launch; ++k)
      if (buckets[k].work) buckets[k].work->done();
    if (flat_work) flat_work->done();
  }

  void on_grad(size_t i) {
    if (!sync) return;
    const std::string& name = params[i].first;
    if (ready[i]) {
      const bool gone = scatter() ? flat_launched : buckets[bucket_of[i]].launched;
      KEEL_CHECK(!gone, "GradientSync: the gradient of '", name,
                 "' changed after its reduction started (a second backward with set_sync(true) "
                 "in one step; call set_sync(true) only before the last micro-step's backward)");
      fill(i);
      return;
    }
    fill(i);
    ready[i] = 1;
    in_flight = true;
    if (scatter()) {
      if (--pending_all == 0) launch_flat();
    } else {
      Bucket& b = buckets[bucket_of[i]];
      --b.pending;
      launch_ready();
    }
    progress();
  }
};

GradientSync::GradientSync(const NamedParams& params, Communicator& comm,
                           GradientSyncOptions options)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.comm = &comm;
  s.params = params;
  s.options = options;
  KEEL_CHECK(options.bucket_mb > 0, "GradientSync: bucket_mb must be positive, got ",
             options.bucket_mb, " (parallel.bucket_mb)");
  KEEL_CHECK(!params.empty(), "GradientSync: no parameters to synchronise");
  for (const auto& [name, p] : params) {
    KEEL_CHECK(p.defined() && p.requires_grad() && p.is_leaf(), "GradientSync: parameter '", name,
               "' is not a leaf that requires grad");
    KEEL_CHECK(is_floating(p.dtype()) && p.is_contiguous() && p.device() == comm.device(),
               "GradientSync: parameter '", name, "' (", p.describe(),
               ") must be a contiguous floating tensor on ", comm.device().str(),
               ", where communicator '", comm.name(), "' reduces (MPI: the host; NCCL: its GPU)");
  }
  s.layout = FlatLayout(params, comm.size());
  const size_t n = params.size();
  s.ready.assign(n, 0);
  s.has_grad.assign(n, 0);

  const Device dev = comm.device();
  if (s.scatter()) {
    s.flat = zeros({s.layout.padded}, DType::F32, dev);       // (padded)
    s.flags = zeros({int64_t(n)}, DType::F32, dev);           // (params)
    s.shard_grad = zeros({s.layout.shard}, DType::F32, dev);  // (shard)
    s.pending_all = n;
  } else {
    // Reverse registration order: the last layers' gradients are final first.
    const int64_t cap = std::max<int64_t>(1, int64_t(options.bucket_mb * 1024 * 1024 / 4));
    s.bucket_of.assign(n, 0);
    s.index_in_bucket.assign(n, 0);
    for (size_t k = n; k-- > 0;) {
      if (s.buckets.empty() || s.buckets.back().numel >= cap) s.buckets.emplace_back();
      Bucket& b = s.buckets.back();
      s.bucket_of[k] = s.buckets.size() - 1;
      s.index_in_bucket[k] = b.params.size();
      b.params.push_back(k);
      b.slots.push_back(b.numel);
      b.numel += params[k].second.numel();
    }
    for (Bucket& b : s.buckets) {
      b.buffer = zeros({b.numel + int64_t(b.params.size())}, DType::F32, dev);  // (grads + flags)
      b.pending = b.params.size();
    }
  }

  std::weak_ptr<State> weak = state_;
  for (size_t i = 0; i < n; ++i)
    register_grad_hook(params[i].second, [weak, i](const Tensor&) {
      if (auto st = weak.lock()) st->on_grad(i);
    });
}

GradientSync::~GradientSync() {
  if (!state_) return;
  auto drop = [](WorkPtr& w) {
    // Unwinding from an error (on this rank only, perhaps): waiting for a
    // collective the other ranks may never join would hang the job instead
    // of letting the error reach MPI_Abort. The Work keeps its buffers alive,
    // so leaking it is safe; otherwise complete it before the buffers go.
    if (std::uncaught_exceptions() > 0)
      (void)w.release();
    else
      w.reset();
  };
  for (Bucket& b : state_->buckets) drop(b.work);
  drop(state_->flat_work);
  drop(state_->flag_work);
}

void GradientSync::set_sync(bool on) {
  State& s = *state_;
  KEEL_CHECK(!s.in_flight, "GradientSync: set_sync(", on ? "true" : "false",
             ") while a reduction is in flight; call finish() after the last micro-step's "
             "backward");
  s.sync = on;
}

void GradientSync::finish() {
  State& s = *state_;
  const size_t n = s.params.size();
  if (s.scatter()) {
    if (!s.flat_launched) {
      for (size_t i = 0; i < n; ++i)
        if (!s.ready[i]) s.fill(i);
      s.launch_flat();
    }
    s.flat_work->wait();
    s.flag_work->wait();
    s.flat_work.reset();
    s.flag_work.reset();
    const Tensor flags = s.flags.to(Device::cpu());  // (params) on the host
    const float* f = flags.data<float>();
    for (size_t i = 0; i < n; ++i) s.has_grad[i] = f[i] > 0.0f;
    s.flat_launched = false;
    s.pending_all = n;
  } else {
    for (size_t k = s.next_launch; k < s.buckets.size(); ++k) {
      Bucket& b = s.buckets[k];
      for (size_t i : b.params)
        if (!s.ready[i]) s.fill(i);
      s.launch_bucket(b);
    }
    s.next_launch = s.buckets.size();
    for (Bucket& b : s.buckets) {
      b.work->wait();
      b.work.reset();
      // (params) flags on the host
      const Tensor flags =
          b.buffer.narrow(0, b.numel, int64_t(b.params.size())).to(Device::cpu()).contiguous();
      const float* f = flags.data<float>();
      for (size_t j = 0; j < b.params.size(); ++j) {
        const size_t i = b.params[j];
        s.has_grad[i] = f[j] > 0.0f;
        if (!s.has_grad[i]) continue;
        const Tensor& p = s.params[i].second;
        Tensor g = p.grad();
        if (!g.defined()) {
          g = empty(p.sizes(), p.dtype(), p.device());
          p.set_grad(g);
        }
        g.copy_(s.slot(i));
      }
      b.launched = false;
      b.pending = b.params.size();
    }
    s.next_launch = 0;
  }
  std::fill(s.ready.begin(), s.ready.end(), 0);
  s.in_flight = false;
  s.sync = false;
  s.finished_once = true;
}

const Tensor& GradientSync::shard_grad() const {
  KEEL_CHECK(state_->scatter(), "GradientSync::shard_grad: only in ReduceScatter mode");
  return state_->shard_grad;
}

bool GradientSync::has_grad(size_t i) const {
  KEEL_CHECK(state_->finished_once, "GradientSync::has_grad: finish() has not run yet");
  return state_->has_grad.at(i) != 0;
}

Tensor& GradientSync::flat_buffer() {
  KEEL_CHECK(state_->scatter(), "GradientSync::flat_buffer: only in ReduceScatter mode");
  KEEL_CHECK(!state_->in_flight, "GradientSync::flat_buffer: a reduction is in flight");
  return state_->flat;
}

const FlatLayout& GradientSync::layout() const { return state_->layout; }
const NamedParams& GradientSync::params() const { return state_->params; }
Communicator& GradientSync::comm() const { return *state_->comm; }
GradReduction GradientSync::reduction() const { return state_->options.reduction; }
size_t GradientSync::num_buckets() const { return state_->scatter() ? 1 : state_->buckets.size(); }

double sum_across(Communicator& comm, double x) {
  int64_t x_bits = 0;
  std::memcpy(&x_bits, &x, sizeof(double));
  Tensor mine = from_vector(std::vector<int64_t>{x_bits}, {1}).to(comm.device());  // (1)
  Tensor all = empty({int64_t(comm.size())}, DType::I64, comm.device());          // (world)
  comm.all_gather(mine, all)->wait();
  const Tensor host = all.to(Device::cpu());  // (world)
  const auto* bits = host.data<int64_t>();
  double total = 0;
  for (int r = 0; r < comm.size(); ++r) {
    double v = 0;
    std::memcpy(&v, &bits[r], sizeof(double));
    total += v;
  }
  return total;
}

void broadcast_string(Communicator& comm, std::string& s, int root) {
  Tensor len = full({1}, double(s.size()), DType::I64);  // (1)
  comm.broadcast(len, root)->wait();
  const int64_t n = len.data<int64_t>()[0];
  Tensor buf = zeros({std::max<int64_t>(n, 1)}, DType::U8);  // (n)
  if (comm.rank() == root) std::memcpy(buf.raw_data(), s.data(), s.size());
  comm.broadcast(buf, root)->wait();
  s.assign(static_cast<const char*>(buf.raw_data()), size_t(n));
}

}  // namespace keel::parallel
