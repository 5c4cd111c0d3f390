// Bytes a tensor-parallel GPT step moves, against Megatron-LM's analytic
// count, in one run (mpirun -np N: tp = N). Every communicator the model
// uses is wrapped to count what each rank sends under the ring algorithms
// (all-reduce of S bytes: 2 (n-1)/n S; reduce-scatter of S bytes in and
// all-gather of S bytes out: (n-1)/n S each; a broadcast or send: S). The
// analytic minimum is Megatron's: per layer, two all-reduces of (B, T, C)
// forward and two backward, 4 * 2 (n-1)/n * B*T*C*4 bytes; with sequence
// parallelism the same volume as all-gathers and reduce-scatters. keel also
// reduces the vocabulary-parallel embedding (forward), the tied head's input
// gradient (backward) and the loss's per-row statistics, so the expected
// ratio is a little above 1 ((4L + 2) / 4L plus O(rows)). With sequence
// parallelism each column-parallel linear gathers its input again in the
// backward pass (parallel/sequence_parallel_linear.h), 10/8 of the minimum
// by design; that count is printed too. It also prints the
// parameter + AdamW bytes each rank holds against the layout's promise
// (sharded weights / tp + replicated ones): the ratio must be 1. Last, the
// activation bytes a rank holds for backward (live host bytes after the
// forward, less those before it) at tp = 1, at tp and at tp + sp, and the
// sp / tp ratio against Megatron's (Korthikanti et al. 2022, per layer with
// fused attention: 34/t sbh with sp against (10 + 24/t) sbh without). keel
// keeps f32 activations and saves a different set, so only ratios compare.
//
//   mpirun -np 2 build/bench/tp_comm_bench [--layers 12 --width 768 --heads 12
//                                          --vocab 50304 --batch 1 --seq 128]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "core/storage.h"
#include "parallel/communicator.h"
#include "parallel/context.h"
#include "recipes/gpt/gpt.h"

namespace {

using namespace keel;
using parallel::Communicator;
using parallel::ReduceOp;
using parallel::WorkPtr;

struct Traffic {
  double bytes = 0;  // sent by this rank, ring model
  int64_t calls = 0;
};

// Forwards every call to `inner`, adding what this rank sends to `traffic`;
// split() wraps the new communicator too, so a Mesh built on a counted world
// counts on every axis.
class Counted final : public Communicator {
 public:
  Counted(std::unique_ptr<Communicator> inner, std::shared_ptr<Traffic> traffic)
      : inner_(std::move(inner)), traffic_(std::move(traffic)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string name() const override { return inner_->name(); }
  Device device() const override { return inner_->device(); }
  WorkPtr all_reduce(Tensor& t, ReduceOp op) override {
    add(2.0 * share() * bytes(t));
    return inner_->all_reduce(t, op);
  }
  WorkPtr reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    add(share() * bytes(in));
    return inner_->reduce_scatter(in, out, op);
  }
  WorkPtr all_gather(const Tensor& in, Tensor& out) override {
    add(share() * bytes(out));
    return inner_->all_gather(in, out);
  }
  WorkPtr broadcast(Tensor& t, int root) override {
    if (size() > 1) add(bytes(t));
    return inner_->broadcast(t, root);
  }
  WorkPtr send(const Tensor& t, int dst, int tag) override {
    add(bytes(t));
    return inner_->send(t, dst, tag);
  }
  WorkPtr recv(Tensor& t, int src, int tag) override { return inner_->recv(t, src, tag); }
  WorkPtr all_to_all(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                     const std::vector<int64_t>& recv_counts) override {
    add(share() * bytes(in));
    return inner_->all_to_all(in, send_counts, out, recv_counts);
  }
  void barrier() override { inner_->barrier(); }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    return std::make_unique<Counted>(inner_->split(color, key, name), traffic_);
  }

 private:
  double share() const { return double(size() - 1) / double(size()); }
  static double bytes(const Tensor& t) { return double(t.numel()) * double(dtype_size(t.dtype())); }
  void add(double b) {
    if (size() == 1) return;
    traffic_->bytes += b;
    ++traffic_->calls;
  }
  std::unique_ptr<Communicator> inner_;
  std::shared_ptr<Traffic> traffic_;
};

int64_t arg(int argc, char** argv, const char* name, int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoll(argv[i + 1]);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  parallel::init_mpi(&argc, &argv);
  int code = 0;
  try {
    auto traffic = std::make_shared<Traffic>();
    Counted world(parallel::mpi_world(), traffic);
    const int tp = world.size();
    gpt::GptConfig cfg;
    cfg.n_layer = arg(argc, argv, "--layers", 12);
    cfg.n_embd = arg(argc, argv, "--width", 768);
    cfg.n_head = arg(argc, argv, "--heads", 12);
    cfg.vocab_size = arg(argc, argv, "--vocab", 50304);
    cfg.padded_vocab_size = (cfg.vocab_size + 128 * tp - 1) / (128 * tp) * (128 * tp);
    cfg.block_size = arg(argc, argv, "--seq", 128);
    const int64_t B = arg(argc, argv, "--batch", 1), T = cfg.block_size, C = cfg.n_embd;
    if (world.rank() == 0)
      std::printf("# tp_comm_bench: tp=%d, GPT %lld layers x %lld, vocab %lld, B=%lld T=%lld\n", tp,
                  (long long)cfg.n_layer, (long long)C, (long long)cfg.vocab_size, (long long)B,
                  (long long)T);
    const double share = double(tp - 1) / double(tp);
    const double analytic = double(cfg.n_layer) * 4.0 * 2.0 * share * double(B * T * C) * 4.0;
    if (world.rank() == 0)
      std::printf("%-22s %14s %14s %8s %7s\n", "layout", "bytes/rank", "analytic", "ratio",
                  "calls");
    double activations[3] = {0, 0, 0};  // tp = 1, tp, tp + sp: bytes saved for backward
    for (int layout : {0, 1, 2}) {
      const bool sp = layout == 2;
      cfg.sequence_parallel = sp;
      std::unique_ptr<Communicator> alone = parallel::local_world();
      parallel::ParallelContext ctx(layout == 0 ? *alone : world,
                                    parallel::MeshShape{1, 1, 1, layout == 0 ? 1 : tp});
      gpt::GPT model(cfg, 1, {}, &ctx);
      model.train();
      Generator g(3);
      Tensor ids = rand_uniform({B, T}, 0, double(cfg.vocab_size) - 1, g).to(DType::I64);  // (B, T)
      *traffic = Traffic{};
      const size_t before = host_memory_stats().allocated;
      Tensor loss = model.loss(ids, ids);
      activations[layout] = double(host_memory_stats().allocated - before);
      loss.backward();
      if (layout == 0) continue;
      if (world.rank() == 0)
        std::printf("%-22s %14.0f %14.0f %8.3f %7lld\n", sp ? "tp + sequence parallel" : "tp",
                    traffic->bytes, analytic, traffic->bytes / analytic, (long long)traffic->calls);
      // Both column-parallel linears of a layer gather their input again in
      // backward (Megatron-LM does too): 2 all-gathers of (B, T, C) per layer.
      if (sp && world.rank() == 0)
        std::printf("%-22s %14.0f %14.0f %8.3f\n", "  with the re-gathers", traffic->bytes,
                    analytic * 10.0 / 8.0, traffic->bytes / (analytic * 10.0 / 8.0));
      if (sp) continue;
      // Parameter + AdamW bytes on this rank (f32 weights, two f32 moments)
      // against the split the layout promises: the sharded weights' logical
      // size / tp plus the replicated ones whole.
      double local = 0, sharded = 0, replicated = 0;
      const auto specs = model.named_parameter_specs();
      const nn::NamedTensors params = model.named_parameters();
      for (size_t i = 0; i < params.size(); ++i) {
        local += double(params[i].second.numel());
        (specs[i].second.sharded() ? sharded : replicated) +=
            double(shape_numel(specs[i].second.logical));
      }
      const double expect = sharded / double(tp) + replicated;
      if (world.rank() == 0)
        std::printf(
            "%-22s %14.0f %14.0f %8.3f   (param + AdamW bytes per rank; whole model %.0f)\n",
            "memory", 12 * local, 12 * expect, local / expect, 12 * (sharded + replicated));
    }
    const double t = double(tp), megatron = (34.0 / t) / (10.0 + 24.0 / t);
    if (world.rank() == 0) {
      std::printf("activation bytes/rank  tp=1 %.0f  tp=%d %.0f (%.3f of tp=1)  +sp %.0f (%.3f)\n",
                  activations[0], tp, activations[1], activations[1] / activations[0],
                  activations[2], activations[2] / activations[0]);
      std::printf("activations sp / no sp %8.3f   Megatron's model %.3f   ratio %.3f\n",
                  activations[2] / activations[1], megatron,
                  activations[2] / activations[1] / megatron);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tp_comm_bench: %s\n", e.what());
    code = 1;
  }
  parallel::finalize_mpi();
  return code;
}
