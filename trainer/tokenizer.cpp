// ByteTokenizer and Gpt2Tokenizer. GPT-2's encoder is reproduced from
// OpenAI's encoder.py: the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// is a hand-written scanner over UTF-8 code points (Unicode categories from
// ICU; \s is Unicode White_Space, as in Python's `regex` module), and BPE
// runs on token ids: every merge's halves and result are in the vocabulary,
// so id pairs stand in one-to-one for the byte-level strings encoder.py
// merges, and merging by rank gives the same ids.
#include "trainer/tokenizer.h"

#include <unicode/uchar.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include "core/error.h"

namespace keel {

namespace {

// ---- files -------------------------------------------------------------------

std::string read_whole_file(const std::string& path, const char* who, const char* hint) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) KEEL_FAIL(who, ": cannot read '", path, "': ", std::strerror(errno), hint);
  std::string data;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), f)) > 0) data.append(buf, got);
  bool failed = std::ferror(f) != 0;
  std::fclose(f);
  KEEL_CHECK(!failed, who, ": error reading '", path, "'");
  return data;
}

// ---- UTF-8 and character classes ---------------------------------------------

struct CodePoint {
  int32_t cp;  // -1: a byte that does not start valid UTF-8, taken alone
  int len;     // bytes
};

// Strict decoding (no overlongs, surrogates or values past U+10FFFF). Invalid
// bytes become one-byte "other" characters, so any byte string still
// tokenises and decodes back to itself.
CodePoint decode_utf8(std::string_view s, size_t i) {
  auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  int len;
  uint32_t cp;
  uint32_t min;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1Fu, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0Fu, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07u, min = 0x10000;
  } else {
    return {-1, 1};
  }
  if (i + size_t(len) > s.size()) return {-1, 1};
  for (int k = 1; k < len; ++k) {
    auto b = static_cast<unsigned char>(s[i + size_t(k)]);
    if ((b & 0xC0) != 0x80) return {-1, 1};
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {-1, 1};
  return {int32_t(cp), len};
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

enum class CharClass : uint8_t { kWhite, kLetter, kNumber, kOther };

CharClass classify_slow(int32_t cp) {
  if (cp < 0) return CharClass::kOther;
  if (u_isUWhiteSpace(cp)) return CharClass::kWhite;
  uint32_t mask = U_GET_GC_MASK(cp);
  if (mask & U_GC_L_MASK) return CharClass::kLetter;
  if (mask & U_GC_N_MASK) return CharClass::kNumber;
  return CharClass::kOther;
}

// Most text is ASCII: a table saves the ICU lookups there.
CharClass classify(int32_t cp) {
  static const auto kAscii = [] {
    std::array<CharClass, 128> t{};
    for (int32_t c = 0; c < 128; ++c) t[size_t(c)] = classify_slow(c);
    return t;
  }();
  if (cp >= 0 && cp < 128) return kAscii[size_t(cp)];
  return classify_slow(cp);
}

// Calls emit(piece) for each match of GPT-2's pre-tokenisation regex, in order;
// the pieces tile the text exactly.
template <typename Emit>
void pretokenize(std::string_view s, Emit&& emit) {
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // 's|'t|'re|'ve|'m|'ll|'d (ASCII, case-sensitive, tried first)
    if (s[i] == '\'' && i + 1 < n) {
      char a = s[i + 1];
      size_t len = 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        len = 2;
      } else if (i + 2 < n) {
        char b = s[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) len = 3;
      }
      if (len) {
        emit(s.substr(i, len));
        i += len;
        continue;
      }
    }
    // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: the optional prefix is U+0020
    // only, and applies when the next character starts a run.
    CodePoint c = decode_utf8(s, i);
    CharClass k = classify(c.cp);
    size_t run = i;  // where the run of class k begins
    if (s[i] == ' ' && i + 1 < n) {
      CodePoint d = decode_utf8(s, i + 1);
      CharClass kd = classify(d.cp);
      if (kd != CharClass::kWhite) c = d, k = kd, run = i + 1;
    }
    if (k != CharClass::kWhite) {
      size_t e = run + size_t(c.len);
      while (e < n) {
        CodePoint d = decode_utf8(s, e);
        if (classify(d.cp) != k) break;
        e += size_t(d.len);
      }
      emit(s.substr(i, e - i));
      i = e;
      continue;
    }
    // `\s+(?!\S)|\s+`: a whitespace run followed by a non-space gives back its
    // last character, which then prefixes the next word (" word"); a run at
    // the end of text, or of one character, is taken whole.
    size_t e = i;
    size_t last = i;
    while (e < n) {
      CodePoint d = decode_utf8(s, e);
      if (classify(d.cp) != CharClass::kWhite) break;
      last = e;
      e += size_t(d.len);
    }
    size_t end = (e == n || last == i) ? e : last;
    emit(s.substr(i, end - i));
    i = end;
  }
}

// ---- GPT-2's byte <-> unicode table ---------------------------------------------

// bytes_to_unicode() of encoder.py: printable Latin-1 bytes stand for
// themselves, the other 68 bytes for U+0100.. in byte order, so that every
// vocabulary entry is printable text.
struct ByteAlphabet {
  std::array<uint32_t, 256> to_cp{};
  std::array<int, 324> to_byte{};  // code point -> byte, -1 when not in the alphabet
  ByteAlphabet() {
    to_byte.fill(-1);
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? b : 256 + n++;
      to_byte[to_cp[b]] = int(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet kAlphabet;
  return kAlphabet;
}

// A vocabulary string (byte-level unicode) -> the raw bytes it stands for, or
// nullopt naming the first code point outside the alphabet via bad_cp.
std::optional<std::string> to_raw_bytes(std::string_view text, int32_t& bad_cp) {
  const ByteAlphabet& alpha = byte_alphabet();
  std::string raw;
  raw.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    CodePoint c = decode_utf8(text, i);
    if (c.cp < 0 || size_t(c.cp) >= alpha.to_byte.size() || alpha.to_byte[size_t(c.cp)] < 0) {
      bad_cp = c.cp;
      return std::nullopt;
    }
    raw += char(alpha.to_byte[size_t(c.cp)]);
    i += size_t(c.len);
  }
  return raw;
}

std::string describe_cp(int32_t cp) {
  if (cp < 0) return "an invalid UTF-8 byte";
  char buf[16];
  std::snprintf(buf, sizeof(buf), "U+%04X", unsigned(cp));
  return buf;
}

// ---- encoder.json ------------------------------------------------------------------

struct JsonEntry {
  std::string key;
  int64_t value;
  size_t pos;  // byte offset of the key, for messages
};

// A reader for one flat JSON object of string -> non-negative integer, which
// is all encoder.json is. Errors name the file, line and column.
class FlatJsonReader {
 public:
  FlatJsonReader(std::string_view text, const std::string& path) : s_(text), path_(path) {}

  std::vector<JsonEntry> read() {
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;  // a UTF-8 byte order mark
    skip_ws();
    expect('{');
    std::vector<JsonEntry> out;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
    } else {
      while (true) {
        skip_ws();
        size_t key_pos = pos_;
        std::string key = read_string();
        skip_ws();
        expect(':');
        skip_ws();
        int64_t value = read_int();
        out.push_back({std::move(key), value, key_pos});
        skip_ws();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect('}');
        break;
      }
    }
    skip_ws();
    if (pos_ != s_.size()) fail(pos_, "unexpected text after the closing '}'");
    return out;
  }

  [[noreturn]] void fail(size_t pos, std::string_view what) const {
    size_t line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < pos && i < s_.size(); ++i) {
      if (s_[i] == '\n') ++line, line_start = i + 1;
    }
    KEEL_FAIL("gpt2 tokenizer: ", path_, ":", line, ":", pos - line_start + 1, ": ", what);
  }

 private:
  int peek() const { return pos_ < s_.size() ? static_cast<unsigned char>(s_[pos_]) : -1; }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }

  void expect(char c) {
    if (pos_ >= s_.size()) fail(pos_, detail::cat("unexpected end of file, expected '", c, "'"));
    if (s_[pos_] != c) fail(pos_, detail::cat("expected '", c, "', found '", s_[pos_], "'"));
    ++pos_;
  }

  uint32_t read_hex4() {
    if (pos_ + 4 > s_.size()) fail(pos_, "unexpected end of file in a \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9')
        v |= uint32_t(h - '0');
      else if (h >= 'a' && h <= 'f')
        v |= uint32_t(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        v |= uint32_t(h - 'A' + 10);
      else
        fail(pos_ - 1, "bad hex digit in a \\u escape");
    }
    return v;
  }

  std::string read_string() {
    if (peek() != '"') fail(pos_, "expected a string key");
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail(pos_, "unexpected end of file inside a string");
      char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail(pos_, "control character inside a string");
      if (c != '\\') {
        out += c;
        ++pos_;
        continue;
      }
      size_t esc = pos_++;
      if (pos_ >= s_.size()) fail(esc, "unexpected end of file in an escape");
      char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          uint32_t cp = read_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail(esc, "unpaired low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // Characters past the BMP come as a UTF-16 surrogate pair.
            if (pos_ + 2 > s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
              fail(esc, "high surrogate not followed by a \\u low surrogate");
            pos_ += 2;
            uint32_t lo = read_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF)
              fail(esc, "high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          fail(esc, detail::cat("unknown escape '\\", e, "'"));
      }
    }
  }

  int64_t read_int() {
    size_t start = pos_;
    if (peek() == '-') fail(pos_, "token ids must be non-negative");
    int64_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      v = v * 10 + (s_[pos_++] - '0');
      if (v > std::numeric_limits<int32_t>::max()) fail(start, "token id too large");
    }
    if (pos_ == start) fail(pos_, "expected an integer token id");
    if (pos_ < s_.size() && (s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E'))
      fail(start, "token ids must be integers");
    return v;
  }

  std::string_view s_;
  const std::string& path_;
  size_t pos_ = 0;
};

constexpr const char* kFetchHint =
    " (run scripts/fetch_assets.sh to download the GPT-2 vocabulary)";
constexpr std::string_view kEndOfText = "<|endoftext|>";
// Bounds the word cache on large corpora; frequent words come right back.
constexpr size_t kMaxCacheEntries = size_t(1) << 18;

uint64_t pair_key(int32_t left, int32_t right) {
  return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}

std::string printable(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", unsigned(u));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

// ---- Tokenizer ------------------------------------------------------------------------

size_t Tokenizer::safe_split(std::string_view, size_t) const { return std::string_view::npos; }

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  encode_into(text, out);
  return out;
}

void Tokenizer::encode_document(std::string_view text, std::vector<int32_t>& out) const {
  if (auto eot = eot_id()) out.push_back(*eot);
  encode_into(text, out);
}

// ---- ByteTokenizer ---------------------------------------------------------------------

void ByteTokenizer::encode_into(std::string_view text, std::vector<int32_t>& out) const {
  out.reserve(out.size() + text.size());
  for (char c : text) out.push_back(static_cast<unsigned char>(c));
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    KEEL_CHECK(ids[i] >= 0 && ids[i] < 256, "byte tokenizer: cannot decode token id ", ids[i],
               " at position ", i, ": ids are bytes, 0..255");
    out += char(ids[i]);
  }
  return out;
}

size_t ByteTokenizer::safe_split(std::string_view text, size_t from) const {
  return from <= text.size() ? from : std::string_view::npos;
}

// ---- Gpt2Tokenizer ---------------------------------------------------------------------

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& dir) {
  const std::string enc_path = dir + "/encoder.json";
  const std::string bpe_path = dir + "/vocab.bpe";
  const std::string enc_text = read_whole_file(enc_path, "gpt2 tokenizer", kFetchHint);
  const std::string bpe_text = read_whole_file(bpe_path, "gpt2 tokenizer", kFetchHint);

  // encoder.json: byte-level strings -> ids, dense from 0.
  FlatJsonReader json(enc_text, enc_path);
  std::vector<JsonEntry> entries = json.read();
  KEEL_CHECK(!entries.empty(), "gpt2 tokenizer: ", enc_path, ": the vocabulary is empty");
  std::unordered_map<std::string, int32_t> ids;
  ids.reserve(entries.size());
  pieces_.assign(entries.size(), std::string());
  std::vector<bool> seen(entries.size(), false);
  for (const JsonEntry& e : entries) {
    int32_t bad_cp = 0;
    std::optional<std::string> raw = to_raw_bytes(e.key, bad_cp);
    if (!raw)
      json.fail(e.pos, detail::cat("key \"", printable(e.key), "\" has ", describe_cp(bad_cp),
                                   ", outside GPT-2's byte alphabet"));
    if (e.value >= int64_t(entries.size()))
      json.fail(e.pos,
                detail::cat("id ", e.value, " of \"", printable(e.key), "\" is not below the ",
                            entries.size(), " entries: ids must be 0..N-1"));
    if (seen[size_t(e.value)]) json.fail(e.pos, detail::cat("id ", e.value, " is given twice"));
    if (!ids.emplace(*raw, int32_t(e.value)).second)
      json.fail(e.pos, detail::cat("key \"", printable(e.key), "\" is given twice"));
    seen[size_t(e.value)] = true;
    pieces_[size_t(e.value)] = std::move(*raw);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = ids.find(std::string(1, char(b)));
    KEEL_CHECK(it != ids.end(), "gpt2 tokenizer: ", enc_path, ": no token for byte ", b,
               ", so some text could not be encoded");
    byte_ids_[size_t(b)] = it->second;
  }
  auto eot = ids.find(std::string(kEndOfText));
  KEEL_CHECK(eot != ids.end(), "gpt2 tokenizer: ", enc_path, ": no \"", kEndOfText, "\" token");
  eot_ = eot->second;

  // vocab.bpe: "#version" line, then one merge "left right" per line, by rank.
  std::unordered_map<uint64_t, size_t> merge_line;  // for duplicate messages
  size_t line_no = 0;
  int32_t rank = 0;
  for (size_t start = 0; start < bpe_text.size();) {
    size_t end = bpe_text.find('\n', start);
    if (end == std::string::npos) end = bpe_text.size();
    std::string_view line(bpe_text.data() + start, end - start);
    start = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.front() == '#')) continue;
    size_t sp = line.find(' ');
    KEEL_CHECK(sp != std::string_view::npos && sp > 0 && sp + 1 < line.size() &&
                   line.find(' ', sp + 1) == std::string_view::npos,
               "gpt2 tokenizer: ", bpe_path, ":", line_no,
               ": expected two symbols separated by one space, got \"", printable(line), "\"");
    std::string_view halves[2] = {line.substr(0, sp), line.substr(sp + 1)};
    int32_t half_ids[2];
    std::string merged;
    for (int h = 0; h < 2; ++h) {
      int32_t bad_cp = 0;
      std::optional<std::string> raw = to_raw_bytes(halves[h], bad_cp);
      KEEL_CHECK(raw.has_value(), "gpt2 tokenizer: ", bpe_path, ":", line_no, ": symbol \"",
                 printable(halves[h]), "\" has ", describe_cp(bad_cp),
                 ", outside GPT-2's byte alphabet");
      auto it = ids.find(*raw);
      KEEL_CHECK(it != ids.end(), "gpt2 tokenizer: ", bpe_path, ":", line_no, ": symbol \"",
                 printable(halves[h]), "\" is not in ", enc_path);
      half_ids[h] = it->second;
      merged += *raw;
    }
    auto it = ids.find(merged);
    KEEL_CHECK(it != ids.end(), "gpt2 tokenizer: ", bpe_path, ":", line_no, ": the merge of \"",
               printable(line), "\" is not in ", enc_path);
    uint64_t key = pair_key(half_ids[0], half_ids[1]);
    auto [pos, fresh] = merge_line.emplace(key, line_no);
    KEEL_CHECK(fresh, "gpt2 tokenizer: ", bpe_path, ":", line_no, ": \"", printable(line),
               "\" repeats the merge on line ", pos->second);
    merges_.emplace(key, Merge{rank++, it->second});
  }
}

void Gpt2Tokenizer::bpe(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(word[0])]);
    return;
  }
  std::string key(word);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> w;
  w.reserve(word.size());
  for (char c : word) w.push_back(byte_ids_[static_cast<unsigned char>(c)]);
  // encoder.py's loop: merge the lowest-ranked adjacent pair, every occurrence
  // left to right, until no adjacent pair is a merge.
  while (w.size() > 1) {
    const Merge* best = nullptr;
    int32_t left = 0, right = 0;
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      auto it = merges_.find(pair_key(w[i], w[i + 1]));
      if (it != merges_.end() && (!best || it->second.rank < best->rank)) {
        best = &it->second;
        left = w[i];
        right = w[i + 1];
      }
    }
    if (!best) break;
    size_t j = 0;
    for (size_t i = 0; i < w.size();) {
      if (i + 1 < w.size() && w[i] == left && w[i + 1] == right) {
        w[j++] = best->merged;
        i += 2;
      } else {
        w[j++] = w[i++];
      }
    }
    w.resize(j);
  }
  out.insert(out.end(), w.begin(), w.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.emplace(std::move(key), std::move(w));
}

void Gpt2Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& out) const {
  pretokenize(text, [&](std::string_view piece) { bpe(piece, out); });
}

std::string Gpt2Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    KEEL_CHECK(ids[i] >= 0 && size_t(ids[i]) < pieces_.size(),
               "gpt2 tokenizer: cannot decode token id ", ids[i], " at position ", i,
               ": the vocabulary has ids 0..", pieces_.size() - 1);
    out += pieces_[size_t(ids[i])];
  }
  return out;
}

// A cut at p is safe when text[p-2] is printable ASCII, text[p-1] is '\n' and
// text[p] is printable ASCII: the regex ends a token at p-2 (no run crosses
// whitespace), takes the lone '\n' as its own token whether or not text
// follows, and starts afresh at p.
size_t Gpt2Tokenizer::safe_split(std::string_view text, size_t from) const {
  auto graphic = [](char c) { return c >= '!' && c <= '~'; };
  for (size_t nl = text.find('\n', from < 1 ? 0 : from - 1); nl != std::string_view::npos;
       nl = text.find('\n', nl + 1)) {
    size_t p = nl + 1;
    if (p >= from && p >= 2 && p < text.size() && graphic(text[p - 2]) && graphic(text[p]))
      return p;
  }
  return std::string_view::npos;
}

// ---- lookup -----------------------------------------------------------------------------

std::string default_assets_dir() {
  if (const char* env = std::getenv("KEEL_ASSETS"); env && *env) return env;
#ifdef KEEL_SOURCE_DIR
  return std::string(KEEL_SOURCE_DIR) + "/assets";
#else
  return "assets";
#endif
}

namespace {
// Every tokenizer keel knows, by id: a new one is one line here.
struct TokenizerEntry {
  const char* id;
  std::unique_ptr<Tokenizer> (*make)(const std::string& assets_dir);
};
const TokenizerEntry kTokenizers[] = {
    {"byte",
     [](const std::string&) -> std::unique_ptr<Tokenizer> {
       return std::make_unique<ByteTokenizer>();
     }},
    {"gpt2",
     [](const std::string& assets) -> std::unique_ptr<Tokenizer> {
       return std::make_unique<Gpt2Tokenizer>(assets + "/gpt2");
     }},
};
}  // namespace

std::vector<std::string> tokenizer_ids() {
  std::vector<std::string> ids;
  for (const auto& t : kTokenizers) ids.emplace_back(t.id);
  return ids;
}

std::unique_ptr<Tokenizer> make_tokenizer(std::string_view id, const std::string& assets_dir) {
  std::string known;
  for (const auto& t : kTokenizers) {
    if (id == t.id) return t.make(assets_dir);
    known += (known.empty() ? "" : ", ") + std::string(t.id);
  }
  KEEL_FAIL("unknown tokenizer \"", id, "\" (known: ", known, ")");
}

}  // namespace keel
