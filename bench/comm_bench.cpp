// Collective bandwidth: all-reduce and reduce-scatter of f32 host buffers
// from 1 KiB to 64 MiB through keel's Communicator (MPI backend), both as
// the non-blocking call followed by Work::wait ("async", what overlapped
// gradient reduction uses) and as the blocking convenience (all_reduce_,
// reduce_scatter_; what the differentiable collectives use), against a
// plain blocking MPI loop (MPI_Allreduce / MPI_Reduce_scatter_block on
// MPI_COMM_WORLD) of the same sizes, in one run; the ratios are keel over
// MPI. Numbers are bus bandwidth in GB/s as nccl-tests defines it, so rank
// counts compare: algbw = bytes / time, all-reduce busbw = algbw * 2(n-1)/n,
// reduce-scatter busbw = algbw * (n-1)/n, with bytes the full (input)
// buffer. Each time is the slowest rank's mean over the
// iterations; the three alternate for five rounds and the best round of
// each is kept, so a noisy neighbour hurts all alike.
//
//   mpirun -np 4 build/bench/comm_bench [max_bytes]   (see comm_bench.sh)
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "parallel/communicator.h"

namespace {

using keel::Tensor;
using keel::parallel::Communicator;
using keel::parallel::ReduceOp;

// Seconds per call, the slowest rank's mean.
double time_per_call(const std::function<void()>& call, int iters) {
  for (int i = 0; i < 2; ++i) call();  // warm-up: connections, buffers
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) call();
  double mine = (MPI_Wtime() - t0) / iters, slowest = 0;
  MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return slowest;
}

std::string human(int64_t bytes) {
  char buf[32];
  if (bytes >= (1 << 20))
    std::snprintf(buf, sizeof(buf), "%lld MiB", (long long)(bytes >> 20));
  else
    std::snprintf(buf, sizeof(buf), "%lld KiB", (long long)(bytes >> 10));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  keel::parallel::init_mpi(&argc, &argv);
  int code = 0;
  try {
    const int64_t max_bytes = argc > 1 ? std::atoll(argv[1]) : int64_t(64) << 20;
    auto world = keel::parallel::mpi_world();
    const int n = world->size(), rank = world->rank();
    if (rank == 0) {
      char lib[MPI_MAX_LIBRARY_VERSION_STRING];
      int len = 0;
      MPI_Get_library_version(lib, &len);
      std::string first(lib, size_t(len));
      first = first.substr(0, first.find_first_of(",\n"));
      std::printf(
          "# keel Communicator (MPI backend) vs plain MPI, %d ranks, f32 host buffers, %s\n", n,
          first.c_str());
      std::printf(
          "| collective | size | keel async GB/s | keel blocking GB/s | MPI GB/s | async/MPI | "
          "blocking/MPI |\n");
      std::printf("|---|---|---:|---:|---:|---:|---:|\n");
    }
    for (const char* coll : {"all_reduce", "reduce_scatter"}) {
      const bool ar = std::string(coll) == "all_reduce";
      for (int64_t bytes = 1024; bytes <= max_bytes; bytes *= 4) {
        const int64_t count = (bytes / 4) / n * n;  // f32 elements, a multiple of n
        const int64_t chunk = count / n;
        Tensor buf = keel::zeros({count});  // zeros: sums stay finite over any number of calls
        Tensor out = keel::zeros({chunk});
        // About 512 MiB of traffic per timing, at least 4 and at most 1000 calls.
        const int iters = int(std::clamp<int64_t>((int64_t(512) << 20) / bytes, 4, 1000));
        std::function<void()> async_call, blocking_call, mpi_call;
        if (ar) {
          async_call = [&] { world->all_reduce(buf, ReduceOp::Sum)->wait(); };
          blocking_call = [&] { world->all_reduce_(buf, ReduceOp::Sum); };
          mpi_call = [&] {
            MPI_Allreduce(MPI_IN_PLACE, buf.data<float>(), int(count), MPI_FLOAT, MPI_SUM,
                          MPI_COMM_WORLD);
          };
        } else {
          async_call = [&] { world->reduce_scatter(buf, out, ReduceOp::Sum)->wait(); };
          blocking_call = [&] { world->reduce_scatter_(buf, out, ReduceOp::Sum); };
          mpi_call = [&] {
            MPI_Reduce_scatter_block(buf.data<float>(), out.data<float>(), int(chunk), MPI_FLOAT,
                                     MPI_SUM, MPI_COMM_WORLD);
          };
        }
        double t_async = 1e30, t_blocking = 1e30, t_mpi = 1e30;
        // Five rounds, the order rotating so that none always runs first.
        double* times[3] = {&t_async, &t_blocking, &t_mpi};
        const std::function<void()>* calls[3] = {&async_call, &blocking_call, &mpi_call};
        for (int round = 0; round < 5; ++round)
          for (int k = 0; k < 3; ++k) {
            const int which = (round + k) % 3;
            *times[which] = std::min(*times[which], time_per_call(*calls[which], iters));
          }
        const double factor = ar ? 2.0 * (n - 1) / n : double(n - 1) / n;
        const double moved = double(count) * 4.0 * factor / 1e9;
        if (rank == 0)
          std::printf("| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", coll,
                      human(bytes).c_str(), moved / t_async, moved / t_blocking, moved / t_mpi,
                      t_mpi / t_async, t_mpi / t_blocking);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "comm_bench: %s\n", e.what());
    code = 1;
  }
  keel::parallel::finalize_mpi();
  return code;
}
