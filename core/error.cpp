// Error formatting: every message carries file:line and, under MPI, the rank.
#include "core/error.h"

#include <atomic>

namespace keel {

namespace {
std::atomic<int> g_error_rank{-1};
}

void set_error_rank(int rank) { g_error_rank.store(rank); }
int error_rank() { return g_error_rank.load(); }

namespace detail {

static std::string where(const char* file, int line) {
  std::string s = cat(" [", file, ":", line);
  if (error_rank() >= 0) s += cat(", rank ", error_rank());
  return s + "]";
}

void throw_error(const char* file, int line, const std::string& msg) {
  throw Error(msg + where(file, line));
}

void throw_internal(const char* file, int line, const char* cond, const std::string& msg) {
  throw InternalError(cat("keel internal error: ", cond, " failed", msg.empty() ? "" : ": ", msg,
                          where(file, line), " -- this is a bug in keel, please report it"));
}

}  // namespace detail
}  // namespace keel
