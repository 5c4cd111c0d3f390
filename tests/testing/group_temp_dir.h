// A temporary directory shared by every rank of a communicator: rank 0 names
// it (pid and test name), creates it empty and removes it at the end; every
// rank gets the same path, and construction and destruction are barriers.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "parallel/data_parallel.h"

namespace keel::testing {

class GroupTempDir {
 public:
  GroupTempDir(parallel::Communicator& comm, const std::string& prefix) : comm_(comm) {
    std::string dir = (std::filesystem::temp_directory_path() /
                       ("keel_" + prefix + "_" + std::to_string(::getpid()) + "_" +
                        ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                          .string();
    parallel::broadcast_string(comm_, dir, 0);
    path_ = dir;
    if (comm_.rank() == 0) {
      std::filesystem::remove_all(path_);
      std::filesystem::create_directories(path_);
    }
    comm_.barrier();
  }
  ~GroupTempDir() {
    comm_.barrier();
    if (comm_.rank() == 0) std::filesystem::remove_all(path_);
  }
  GroupTempDir(const GroupTempDir&) = delete;
  GroupTempDir& operator=(const GroupTempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  parallel::Communicator& comm_;
  std::filesystem::path path_;
};

}  // namespace keel::testing
