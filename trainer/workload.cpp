#include "trainer/workload.h"

namespace keel::trainer {

const Tensor& Batch::at(const std::string& name) const {
  std::string present;
  for (const auto& [n, t] : tensors) {
    if (n == name) return t;
    present += (present.empty() ? "" : ", ") + n;
  }
  KEEL_FAIL("batch has no tensor '", name, "' (it holds: ", present.empty() ? "nothing" : present,
            ")");
}

Batch Batch::to(Device device) const {
  Batch out;
  for (const auto& [n, t] : tensors) out.tensors.emplace_back(n, t.to(device));
  return out;
}

}  // namespace keel::trainer
