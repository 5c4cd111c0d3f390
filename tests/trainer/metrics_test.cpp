// Metrics: the progress line, JSONL encoding (escapes, round-trip numbers,
// one flushed line per record), CRC32C known answers, and TensorBoard event
// files parsed back record by record (framing, CRCs, protobuf fields).
#include "trainer/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace keel::trainer {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& tag) {
  fs::path d =
      fs::temp_directory_path() / ("keel_metrics_" + std::to_string(::getpid()) + "_" + tag);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// ---- progress ---------------------------------------------------------------------------

TEST(MetricsProgress, LineHasEveryField) {
  ProgressInfo p;
  p.step = 120;
  p.total_steps = 5000;
  p.loss = 3.21449;
  p.lr = 6e-4;
  p.grad_norm = 1.234;
  p.tokens_per_sec = 12345.4;
  p.eta_seconds = 252;
  EXPECT_EQ(format_progress(p),
            "step   120/5000 | loss 3.2145 | lr 6.00e-04 | gnorm 1.23 | 12,345 tok/s | eta 4m12s");

  ProgressInfo q;  // no grad norm, no eta, no total
  q.step = 7;
  q.loss = std::numeric_limits<double>::quiet_NaN();
  q.lr = 1e-3;
  q.tokens_per_sec = 999;
  std::string line = format_progress(q);
  EXPECT_EQ(line.rfind("step 7 | loss nan | lr 1.00e-03 | 999 tok/s", 0), 0u) << line;
  EXPECT_EQ(line.find("gnorm"), std::string::npos) << line;
  EXPECT_EQ(line.find("eta"), std::string::npos) << line;
}

TEST(MetricsProgress, DurationsAndThousands) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(60), "1m00s");
  EXPECT_EQ(format_duration(3599), "59m59s");
  EXPECT_EQ(format_duration(3600 * 2 + 5 * 60), "2h05m");
  EXPECT_EQ(format_duration(86400 * 3 + 3600 * 4), "3d04h");
  EXPECT_EQ(format_duration(-1), "--");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "--");
  EXPECT_EQ(format_thousands(0), "0");
  EXPECT_EQ(format_thousands(999), "999");
  EXPECT_EQ(format_thousands(1000), "1,000");
  EXPECT_EQ(format_thousands(1234567), "1,234,567");
  EXPECT_EQ(format_thousands(-12345), "-12,345");
  EXPECT_EQ(format_thousands(std::numeric_limits<int64_t>::min()), "-9,223,372,036,854,775,808");
}

// ---- JSONL --------------------------------------------------------------------------------

TEST(Jsonl, EncodesEscapesAndRoundTripNumbers) {
  EXPECT_EQ(to_json_object({{"step", 120}, {"loss", 0.1}, {"ok", true}, {"name", "gpt"}}),
            R"({"step":120,"loss":0.1,"ok":true,"name":"gpt"})");
  EXPECT_EQ(JsonValue::encode_string("a\"b\\c\nd\te\x01"), R"("a\"b\\c\nd\te\u0001")");
  EXPECT_EQ(JsonValue::encode_string("caf\xc3\xa9"), "\"caf\xc3\xa9\"");  // UTF-8 kept
  EXPECT_EQ(JsonValue(std::numeric_limits<double>::quiet_NaN()).encoded(), "null");
  EXPECT_EQ(JsonValue(-std::numeric_limits<double>::infinity()).encoded(), "null");
  EXPECT_EQ(JsonValue(int64_t(-9007199254740993)).encoded(), "-9007199254740993");
  for (double v : {0.1 + 0.2, 1e-300, 6e-4, 123456789.123456789, -2.5e17, 5e-324}) {
    std::string s = JsonValue(v).encoded();
    EXPECT_EQ(std::strtod(s.c_str(), nullptr), v) << s;
  }
  EXPECT_EQ(std::strtof(JsonValue(0.3f).encoded().c_str(), nullptr), 0.3f);
}

TEST(Jsonl, WriterAppendsOneFlushedLinePerRecord) {
  fs::path d = fresh_dir("jsonl");
  std::string path = (d / "metrics.jsonl").string();
  {
    JsonlWriter w(path);
    w.write({{"step", 1}, {"loss", 3.5}, {"lr", 6e-4}});
    // Flushed per line: visible to a reader while the writer is still open.
    EXPECT_EQ(read_all(path), "{\"step\":1,\"loss\":3.5,\"lr\":6e-04}\n");
    w.write({{"step", 2}, {"loss", std::nan("")}, {"note", "warm\nup"}});
  }
  {
    JsonlWriter again(path);  // a resumed run continues the log
    again.write({{"step", 3}, {"loss", 0.1 + 0.2}});
  }
  auto lines = lines_of(read_all(path));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[1].find("\"step\":2"), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find("\"loss\":null"), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find("\"note\":\"warm\\nup\""), std::string::npos) << lines[1];
  std::string key = "\"loss\":";
  size_t at = lines[2].find(key);
  ASSERT_NE(at, std::string::npos) << lines[2];
  EXPECT_EQ(std::strtod(lines[2].c_str() + at + key.size(), nullptr), 0.1 + 0.2);
  for (const auto& line : lines) {
    EXPECT_EQ(line.front(), '{');
    EXPECT_EQ(line.back(), '}');
  }
  EXPECT_THROW(JsonlWriter((d / "no" / "such" / "dir.jsonl").string()), Error);
  fs::remove_all(d);
}

// ---- CRC32C --------------------------------------------------------------------------------

TEST(MetricsCrc32c, KnownAnswers) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  std::vector<unsigned char> zeros(32, 0), ones(32, 0xff);
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  uint32_t c = 0xE3069283u;
  EXPECT_EQ(masked_crc32c("123456789", 9), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

// ---- TensorBoard ------------------------------------------------------------------------------

// A minimal protobuf reader: field number -> raw values in order. Varints are
// stored as their integer, fixed and length-delimited fields as bytes.
struct Field {
  uint32_t wire = 0;
  uint64_t varint = 0;
  std::string bytes;
};
using Message = std::multimap<uint32_t, Field>;

uint64_t read_varint(const std::string& s, size_t& pos) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos >= s.size()) throw std::runtime_error("varint runs past the end");
    auto b = static_cast<unsigned char>(s[pos++]);
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  throw std::runtime_error("varint too long");
}

Message parse_message(const std::string& s) {
  Message m;
  size_t pos = 0;
  while (pos < s.size()) {
    uint64_t key = read_varint(s, pos);
    Field f;
    f.wire = uint32_t(key & 7);
    size_t n = 0;
    if (f.wire == 0) {
      f.varint = read_varint(s, pos);
    } else {
      n = f.wire == 1 ? 8 : f.wire == 5 ? 4 : f.wire == 2 ? size_t(read_varint(s, pos)) : 0;
      if (n == 0 && f.wire != 2) throw std::runtime_error("unexpected wire type");
      if (pos + n > s.size()) throw std::runtime_error("field runs past the end");
      f.bytes = s.substr(pos, n);
      pos += n;
    }
    m.emplace(uint32_t(key >> 3), f);
  }
  return m;
}

uint64_t le(const std::string& s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= uint64_t(static_cast<unsigned char>(s[pos + size_t(i)])) << (8 * i);
  return v;
}

// Splits a TFRecord file into its payloads, checking every length and CRC.
std::vector<std::string> read_records(const std::string& bytes) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < bytes.size()) {
    EXPECT_GE(bytes.size() - pos, 12u) << "truncated header at " << pos;
    if (bytes.size() - pos < 12) break;
    uint64_t len = le(bytes, pos, 8);
    EXPECT_EQ(le(bytes, pos + 8, 4), masked_crc32c(bytes.data() + pos, 8))
        << "length crc at " << pos;
    pos += 12;
    EXPECT_GE(bytes.size() - pos, len + 4) << "truncated record at " << pos;
    if (bytes.size() - pos < len + 4) break;
    std::string data = bytes.substr(pos, len);
    EXPECT_EQ(le(bytes, pos + len, 4), masked_crc32c(data.data(), data.size()))
        << "data crc at " << pos;
    pos += len + 4;
    out.push_back(data);
  }
  return out;
}

double as_double(const Field& f) {
  uint64_t bits = le(f.bytes, 0, 8);
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

float as_float(const Field& f) {
  auto bits = uint32_t(le(f.bytes, 0, 4));
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

TEST(TensorBoard, EventFileParsesBack) {
  fs::path d = fresh_dir("tb") / "logs";  // the writer creates missing dirs
  struct Scalar {
    std::string tag;
    double value;
    int64_t step;
  };
  std::vector<Scalar> written = {
      {"train/loss", 3.25, 10},
      {"train/lr", 6e-4, 10},
      {"train/loss", 2.5, int64_t(1) << 40},
      {"a_tag_longer_than_one_hundred_twenty_seven_bytes_" + std::string(100, 'x'), -1.5, 127}};
  std::string path;
  {
    TensorBoardWriter tb(d.string());
    path = tb.path();
    for (const auto& s : written) tb.add_scalar(s.tag, s.value, s.step);
    tb.flush();
  }
  EXPECT_EQ(fs::path(path).parent_path(), d);
  EXPECT_EQ(fs::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u) << path;

  auto records = read_records(read_all(path));
  ASSERT_EQ(records.size(), written.size() + 1);
  Message first = parse_message(records[0]);
  ASSERT_EQ(first.count(3), 1u);
  EXPECT_EQ(first.find(3)->second.bytes, "brain.Event:2");
  ASSERT_EQ(first.count(1), 1u);
  EXPECT_EQ(first.find(1)->second.wire, 1u);
  double t0 = as_double(first.find(1)->second);
  EXPECT_GT(t0, 1.6e9);  // a Unix time in seconds, not milliseconds
  EXPECT_LT(t0, 1e10);

  for (size_t i = 0; i < written.size(); ++i) {
    Message ev = parse_message(records[i + 1]);
    ASSERT_EQ(ev.count(2), 1u);
    EXPECT_EQ(int64_t(ev.find(2)->second.varint), written[i].step);
    ASSERT_EQ(ev.count(1), 1u);
    EXPECT_GE(as_double(ev.find(1)->second), t0);
    ASSERT_EQ(ev.count(5), 1u);
    ASSERT_EQ(ev.find(5)->second.wire, 2u);
    Message summary = parse_message(ev.find(5)->second.bytes);
    ASSERT_EQ(summary.count(1), 1u);
    Message value = parse_message(summary.find(1)->second.bytes);
    ASSERT_EQ(value.count(1), 1u);
    EXPECT_EQ(value.find(1)->second.bytes, written[i].tag);
    ASSERT_EQ(value.count(2), 1u);
    EXPECT_EQ(value.find(2)->second.wire, 5u);
    EXPECT_EQ(as_float(value.find(2)->second), float(written[i].value));
  }
  fs::remove_all(d.parent_path());
}

TEST(TensorBoard, TwoWritersGetDistinctFiles) {
  fs::path d = fresh_dir("tb2");
  TensorBoardWriter a(d.string());
  TensorBoardWriter b(d.string());
  EXPECT_NE(a.path(), b.path());
  a.add_scalar("x", 1, 1);
  a.flush();
  b.flush();
  EXPECT_EQ(read_records(read_all(a.path())).size(), 2u);
  EXPECT_EQ(read_records(read_all(b.path())).size(), 1u);
  fs::remove_all(d);
}

}  // namespace
}  // namespace keel::trainer
