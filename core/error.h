// Errors and checks. keel::Error is a user error (bad shapes, bad config,
// bad files): its message says what was wrong and where. KEEL_ASSERT guards
// keel's own invariants; when it fires, keel has a bug (keel::InternalError).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace keel {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

class InternalError : public std::logic_error {
 public:
  explicit InternalError(const std::string& what) : std::logic_error(what) {}
};

// The process rank (set once by the parallel layer) so messages can name it.
void set_error_rank(int rank);
int error_rank();

namespace detail {
template <typename... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);
[[noreturn]] void throw_internal(const char* file, int line, const char* cond,
                                 const std::string& msg);
}  // namespace detail

}  // namespace keel

// User error: KEEL_CHECK(cond, "what", shape, "...") throws keel::Error.
#define KEEL_CHECK(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond)) [[unlikely]]                                                  \
      ::keel::detail::throw_error(__FILE__, __LINE__,                          \
                                  ::keel::detail::cat(__VA_ARGS__));           \
  } while (0)

#define KEEL_FAIL(...)                                                         \
  ::keel::detail::throw_error(__FILE__, __LINE__, ::keel::detail::cat(__VA_ARGS__))

// Internal invariant: a failure is a bug in keel, not in the caller's input.
#define KEEL_ASSERT(cond, ...)                                                 \
  do {                                                                         \
    if (!(cond)) [[unlikely]]                                                  \
      ::keel::detail::throw_internal(__FILE__, __LINE__, #cond,                \
                                     ::keel::detail::cat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)
