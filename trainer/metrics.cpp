// Progress line, JSONL log and TensorBoard event files. The event encoding
// follows tensorflow/core/util/event.proto and the TFRecord format:
//   record = u64 length | u32 masked_crc32c(length) | data | u32 masked_crc32c(data)
// all little-endian.
#include "trainer/metrics.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "core/error.h"

namespace keel::trainer {
namespace {

std::string printf_str(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

}  // namespace

// ---- progress line ----------------------------------------------------------------

std::string format_thousands(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -(value + 1) + uint64_t(1) : uint64_t(value));
  std::string out;
  int n = int(digits.size());
  for (int i = 0; i < n; ++i) {
    if (i > 0 && (n - i) % 3 == 0) out += ',';
    out += digits[size_t(i)];
  }
  return value < 0 ? "-" + out : out;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  auto s = int64_t(std::llround(seconds));
  char buf[48];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lldd%02lldh", static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600));
  }
  return buf;
}

std::string format_progress(const ProgressInfo& p) {
  std::string out;
  if (p.total_steps > 0) {
    // Pad the step to the width of the total so successive lines align.
    int width = int(std::to_string(p.total_steps).size()) + 1;
    char buf[64];
    std::snprintf(buf, sizeof(buf), "step %*lld/%lld", width, static_cast<long long>(p.step),
                  static_cast<long long>(p.total_steps));
    out = buf;
  } else {
    out = "step " + std::to_string(p.step);
  }
  out += " | loss " + printf_str("%.4f", p.loss);
  out += " | lr " + printf_str("%.2e", p.lr);
  if (p.grad_norm) out += " | gnorm " + printf_str("%.2f", *p.grad_norm);
  double tps = std::isfinite(p.tokens_per_sec) ? p.tokens_per_sec : 0.0;
  out += " | " + format_thousands(int64_t(std::llround(tps))) + " tok/s";
  if (p.eta_seconds) out += " | eta " + format_duration(*p.eta_seconds);
  return out;
}

// ---- JSONL ------------------------------------------------------------------------------

std::string JsonValue::encode_double(double v) {
  // JSON has no NaN or infinity; null keeps the line parseable by any reader.
  if (!std::isfinite(v)) return "null";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);  // shortest form that round-trips
  return std::string(buf, res.ptr);
}

std::string JsonValue::encode_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (u < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", unsigned(u));
          out += buf;
        } else {
          out += c;  // UTF-8 bytes pass through unchanged
        }
    }
  }
  return out + "\"";
}

std::string to_json_object(const JsonFields& fields) {
  std::string out = "{";
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) out += ',';
    out += JsonValue::encode_string(fields[i].first);
    out += ':';
    out += fields[i].second.encoded();
  }
  return out + "}";
}

JsonlWriter::JsonlWriter(const std::string& path)
    : path_(path), file_(std::fopen(path.c_str(), "a")) {
  KEEL_CHECK(file_ != nullptr, "metrics log ", path,
             ": cannot open for appending: ", std::strerror(errno));
}

void JsonlWriter::write(const JsonFields& fields) {
  std::string line = to_json_object(fields) + "\n";
  bool ok = std::fwrite(line.data(), 1, line.size(), file_.get()) == line.size();
  ok = std::fflush(file_.get()) == 0 && ok;
  KEEL_CHECK(ok, "metrics log ", path_, ": write failed: ", std::strerror(errno));
}

// ---- TensorBoard ---------------------------------------------------------------------

namespace {

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += char((v >> (8 * i)) & 0xffu);
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char((v & 0x7fu) | 0x80u);
    v >>= 7;
  }
  out += char(v);
}

// Protobuf wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
void put_key(std::string& out, uint32_t field, uint32_t wire_type) {
  put_varint(out, (uint64_t(field) << 3) | wire_type);
}

void put_bytes_field(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

double wall_time_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// Event fields 1 (wall_time, double) and 2 (step, int64); the caller appends the rest.
std::string event_header(int64_t step) {
  std::string ev;
  double wall = wall_time_now();
  uint64_t bits;
  std::memcpy(&bits, &wall, 8);
  put_key(ev, 1, 1);
  put_le(ev, bits, 8);
  put_key(ev, 2, 0);
  put_varint(ev, uint64_t(step));  // int64: negatives take ten bytes, as protobuf does
  return ev;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < size; ++i) c = kCrc32cTable[(c ^ p[i]) & 0xffu] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& log_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(log_dir, ec);
  KEEL_CHECK(!ec, "tensorboard log dir ", log_dir, ": cannot create: ", ec.message());
  char host[256] = "localhost";
  if (gethostname(host, sizeof(host)) != 0) std::strcpy(host, "localhost");
  host[sizeof(host) - 1] = '\0';
  auto secs = static_cast<long long>(std::time(nullptr));
  char base[320];
  std::snprintf(base, sizeof(base), "events.out.tfevents.%010lld.%s", secs, host);
  // Two writers in one directory within a second get distinct files: "x" refuses to reuse one.
  for (int n = 0; n < 1000 && !file_; ++n) {
    std::string name = n == 0 ? std::string(base) : std::string(base) + "." + std::to_string(n);
    path_ = (fs::path(log_dir) / name).string();
    file_.reset(std::fopen(path_.c_str(), "wbx"));
    if (!file_ && errno != EEXIST) break;
  }
  KEEL_CHECK(file_ != nullptr, "tensorboard event file ", path_,
             ": cannot create: ", std::strerror(errno));
  std::string ev = event_header(0);
  put_bytes_field(ev, 3, "brain.Event:2");  // file_version
  write_record(ev);
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fflush(file_.get());
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  std::string val;  // Summary.Value
  put_bytes_field(val, 1, tag);
  auto f = float(value);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  put_key(val, 2, 5);  // simple_value, float
  put_le(val, bits, 4);
  std::string summary;
  put_bytes_field(summary, 1, val);  // Summary.value (repeated)
  std::string ev = event_header(step);
  put_bytes_field(ev, 5, summary);  // Event.summary
  write_record(ev);
}

void TensorBoardWriter::flush() {
  KEEL_CHECK(std::fflush(file_.get()) == 0, "tensorboard event file ", path_,
             ": flush failed: ", std::strerror(errno));
}

void TensorBoardWriter::write_record(const std::string& data) {
  std::string rec;
  std::string len;
  put_le(len, data.size(), 8);
  rec += len;
  put_le(rec, masked_crc32c(len.data(), len.size()), 4);
  rec += data;
  put_le(rec, masked_crc32c(data.data(), data.size()), 4);
  KEEL_CHECK(std::fwrite(rec.data(), 1, rec.size(), file_.get()) == rec.size(),
             "tensorboard event file ", path_, ": write failed: ", std::strerror(errno));
}

}  // namespace keel::trainer
