// Training metrics out of the loop: the one-line progress report, a JSONL log
// (one JSON object per line, flushed per line so `tail -f` and a crash both
// see every finished step) and TensorBoard event files written without
// TensorFlow: TFRecord framing with masked CRC32C and Event protos encoded by
// hand in protobuf wire format.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace keel::trainer {

// ---- progress line ---------------------------------------------------------------

struct ProgressInfo {
  int64_t step = 0;
  int64_t total_steps = 0;  // <= 0: unknown, printed as "step 120"
  double loss = 0;
  double lr = 0;
  std::optional<double> grad_norm;  // omitted when not measured
  double tokens_per_sec = 0;
  std::optional<double> eta_seconds;  // omitted when unknown
};

// "step   120/5000 | loss 3.2145 | lr 6.00e-04 | gnorm 1.23 | 12,345 tok/s | eta 4m12s"
std::string format_progress(const ProgressInfo& p);
// "42s", "4m12s", "2h05m", "3d04h"; negative or non-finite input gives "--".
std::string format_duration(double seconds);
// "12,345", "-1,000"
std::string format_thousands(int64_t value);

// ---- JSONL -------------------------------------------------------------------------

// One JSON value, already encoded. Floating-point numbers are written in
// their shortest round-trip form; NaN and infinities (not JSON) become null.
// The constructors are implicit so that fields read {"step", 120}.
class JsonValue {
 public:
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
  JsonValue(T v) {  // NOLINT
    if constexpr (std::is_same_v<T, bool>) {
      encoded_ = v ? "true" : "false";
    } else if constexpr (std::is_integral_v<T>) {
      encoded_ = std::to_string(v);
    } else {
      encoded_ = encode_double(double(v));
    }
  }
  JsonValue(const char* s) : encoded_(encode_string(s)) {}         // NOLINT
  JsonValue(const std::string& s) : encoded_(encode_string(s)) {}  // NOLINT
  JsonValue(std::string_view s) : encoded_(encode_string(s)) {}    // NOLINT

  const std::string& encoded() const { return encoded_; }
  static std::string encode_double(double v);
  static std::string encode_string(std::string_view s);  // quoted and escaped

 private:
  std::string encoded_;
};

using JsonFields = std::vector<std::pair<std::string, JsonValue>>;

// {"step":120,"loss":3.2145} (no trailing newline)
std::string to_json_object(const JsonFields& fields);

// Appends one JSON object per line to a file, flushing after each line.
class JsonlWriter {
 public:
  // Opens `path` for appending (creating it), so a resumed run continues the log.
  explicit JsonlWriter(const std::string& path);
  void write(const JsonFields& fields);
  const std::string& path() const { return path_; }

 private:
  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::string path_;
  std::unique_ptr<std::FILE, Closer> file_;
};

// ---- TensorBoard -------------------------------------------------------------------

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses.
uint32_t crc32c(const void* data, size_t size);
// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t size);

// Writes events.out.tfevents.<unix time>.<host> in a log dir (created if
// needed). The first record carries file_version "brain.Event:2"; each
// add_scalar is one Event{wall_time, step, summary{value{tag, simple_value}}}.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& log_dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);

  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::string path_;
  std::unique_ptr<std::FILE, Closer> file_;
};

}  // namespace keel::trainer
