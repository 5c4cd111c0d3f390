// Checkpoint files in a directory: their names (step_<8+ digits>.h5), the
// latest one, and pruning all but the newest complete ones. A file only
// gets its final name once it is complete (written under a temporary name,
// then renamed), so a listed name is never a half-written checkpoint.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "trainer/checkpoint.h"

namespace keel::trainer {
namespace {

namespace fs = std::filesystem;

const std::regex& checkpoint_name_re() {
  static const std::regex re(R"(step_(\d{8,18})\.h5)");
  return re;
}

std::vector<std::pair<int64_t, std::string>> list_checkpoint_files(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, checkpoint_name_re())) continue;
    if (!entry.is_regular_file(ec)) continue;
    out.emplace_back(std::stoll(m[1].str()), entry.path().string());
  }
  KEEL_CHECK(!ec, "checkpoint directory ", dir, ": cannot list: ", ec.message());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a > b; });
  return out;
}

}  // namespace

std::string checkpoint_path(const std::string& dir, int64_t step) {
  KEEL_CHECK(step >= 0, "checkpoint_path: step must be >= 0, got ", step);
  char name[40];
  std::snprintf(name, sizeof(name), "step_%08lld.h5", static_cast<long long>(step));
  return (fs::path(dir) / name).string();
}

std::string latest_checkpoint(const std::string& dir) {
  auto files = list_checkpoint_files(dir);
  return files.empty() ? std::string() : files.front().second;
}

void prune_checkpoints(const std::string& dir, int64_t keep_last) {
  KEEL_CHECK(keep_last >= 1, "prune_checkpoints: keep_last must be >= 1, got ", keep_last);
  int64_t kept = 0;
  for (const auto& [step, file] : list_checkpoint_files(dir)) {
    if (!is_complete_checkpoint(file)) continue;
    if (kept < keep_last) {
      ++kept;
      continue;
    }
    std::error_code ec;
    fs::remove(file, ec);
    KEEL_CHECK(!ec, "prune_checkpoints: cannot delete ", file, ": ", ec.message());
  }
}

}  // namespace keel::trainer
