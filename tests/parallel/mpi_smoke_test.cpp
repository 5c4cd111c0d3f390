// MPI harness smoke test, run by CTest under mpirun (main() is shared, in
// tests/testing/mpi_main.cpp): every rank builds the same tensor from the
// same seed, and an all-reduce of per-rank values gives the expected sum.
// Failures on any rank fail the job.
#include <gtest/gtest.h>
#include <mpi.h>

#include "core/tensor.h"
#include "parallel/check.h"
#include "tests/testing/gradcheck.h"

namespace keel {
namespace {

TEST(MpiSmoke, WorldHasSeveralRanks) {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_GE(size, 2);  // launched through mpirun, not as a singleton
}

TEST(MpiSmoke, SameSeedSameTensorOnEveryRank) {
  Generator g(2024);
  Tensor x = randn({256}, g);
  std::vector<float> mine = x.to_vector<float>();
  std::vector<float> root(mine.size());
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) root = mine;
  MPI_Bcast(root.data(), int(root.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
  EXPECT_EQ(mine, root);
}

TEST(MpiSmoke, AllReduceOfTensorData) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  Tensor x = full({64}, double(rank + 1));
  MPI_Allreduce(MPI_IN_PLACE, x.data<float>(), int(x.numel()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  double expected = size * (size + 1) / 2.0;
  for (double v : testing::to_doubles(x)) EXPECT_EQ(v, expected);
}

TEST(MpiSmoke, CheckMacroTurnsFailuresIntoErrorsWithTheRank) {
  MPI_Comm dup;
  KEEL_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  int rank = 0;
  MPI_Comm_rank(dup, &rank);
  float x = 0;
  // A root outside the communicator is an MPI error, reported on every rank.
  const std::string where = "rank " + std::to_string(rank);
  EXPECT_KEEL_ERROR(KEEL_MPI_CHECK(MPI_Bcast(&x, 1, MPI_FLOAT, 99, dup)), "MPI_Bcast",
                    where.c_str());
  MPI_Comm_free(&dup);
}

}  // namespace
}  // namespace keel
