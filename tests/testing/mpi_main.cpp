// The GoogleTest main of the MPI test binary (tests/parallel/*_test.cpp), run
// by CTest under mpirun: every rank runs every test, only rank 0 prints, and
// the job fails when any rank has a failure.
#include <gtest/gtest.h>
#include <mpi.h>

#include "parallel/communicator.h"

int main(int argc, char** argv) {
  keel::parallel::init_mpi(&argc, &argv);  // MPI_THREAD_FUNNELED, and the error rank
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  ::testing::InitGoogleTest(&argc, argv);
  // Only rank 0 prints; every rank's failures count through the reduction below.
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  keel::parallel::finalize_mpi();
  return any_failed;
}
