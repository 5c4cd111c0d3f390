// Tokenizers: GPT-2 BPE against ids from OpenAI's encoder.py (computed with
// the reference implementation and the same encoder.json / vocab.bpe),
// round trips, the byte tokenizer, and loading errors.
#include "trainer/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/testing/temp_dir.h"

namespace keel {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;

using testing::error_of;

// Temporary directories named after this file's tests.
class TempDir : public testing::TempDir {
 public:
  TempDir() : testing::TempDir("tok") {}
};

// ---- GPT-2 with the real vocabulary ----------------------------------------------------

class Gpt2 : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = default_assets_dir() + "/gpt2";
    if (!fs::exists(dir + "/encoder.json") || !fs::exists(dir + "/vocab.bpe")) {
      FAIL() << "GPT-2 vocabulary not found in " << dir
             << ": run scripts/fetch_assets.sh (or point KEEL_ASSETS at a directory holding gpt2/)";
    }
    if (!tok_) tok_ = std::make_unique<Gpt2Tokenizer>(dir);
  }
  const Gpt2Tokenizer& tok() const { return *tok_; }

 private:
  static inline std::unique_ptr<Gpt2Tokenizer> tok_;
};

TEST_F(Gpt2, MatchesReferenceExample) {
  EXPECT_EQ(tok().encode("It's 2024! naïve café — 日本語"),
            (Ids{1026, 338, 48609, 0, 41492, 40304, 851, 10545, 245, 98, 17312, 105, 45739, 252}));
  EXPECT_EQ(tok().vocab_size(), 50257);
  EXPECT_EQ(tok().id(), "gpt2");
}

TEST_F(Gpt2, Contractions) {
  EXPECT_EQ(tok().encode("I'll've don't"), (Ids{40, 1183, 1053, 836, 470}));
  // Contractions are lower-case ASCII only and match even before more letters.
  EXPECT_EQ(tok().encode("'S 's 'sam ''s it''s"),
            (Ids{6, 50, 705, 82, 705, 37687, 10148, 82, 340, 7061, 82}));
}

TEST_F(Gpt2, Digits) { EXPECT_EQ(tok().encode("2024 1 000"), (Ids{1238, 1731, 352, 12877})); }

TEST_F(Gpt2, WhitespaceRunsKeepTheirLastSpaceForTheNextWord) {
  EXPECT_EQ(tok().encode("a  b\n\n c   "), (Ids{64, 220, 275, 628, 269, 220, 220, 220}));
  EXPECT_EQ(tok().encode("x\r\n\r\n  \tfoo\n"),
            (Ids{87, 201, 198, 201, 198, 220, 220, 197, 21943, 198}));
  // Unicode White_Space that is not U+0020 never prefixes a word.
  EXPECT_EQ(tok().encode("\t\u3000x\u00a0y \u2028z  "),
            (Ids{197, 5099, 222, 87, 1849, 88, 220, 447, 101, 89, 220, 220}));
}

TEST_F(Gpt2, NonAscii) {
  EXPECT_EQ(tok().encode("Ünïcödé façade «quoted» ½ ² Ⅻ ١٢٣ 🙂👍🏽"),
            (Ids{127,   250, 77,   26884, 66,    9101,  67,    2634, 24685, 16175, 671,
                 21110, 421, 5191, 17730, 25208, 1587,  110,   2343, 227,   104,   18923,
                 94,    149, 95,   149,   96,    32485, 41840, 235,  8582,  237,   121}));
  EXPECT_EQ(tok().encode("Привет, мир! Καλημέρα κόσμε"),
            (Ids{140,   253,   21169, 18849, 38857, 16843, 20375, 11,    12466, 120, 18849,
                 21169, 0,     7377,  248,   17394, 39377, 138,   115,   34703, 138, 255,
                 33643, 17394, 7377,  118,   139,   234,   38392, 34703, 30950}));
}

TEST_F(Gpt2, EndOfTextIsNeverReadFromText) {
  ASSERT_TRUE(tok().eot_id().has_value());
  EXPECT_EQ(*tok().eot_id(), 50256);
  EXPECT_EQ(tok().encode("<|endoftext|>"), (Ids{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_EQ(tok().decode(Ids{50256}), "<|endoftext|>");
  Ids doc;
  tok().encode_document("Hi", doc);
  tok().encode_document("you", doc);
  Ids want{50256};
  for (int32_t t : tok().encode("Hi")) want.push_back(t);
  want.push_back(50256);
  for (int32_t t : tok().encode("you")) want.push_back(t);
  EXPECT_EQ(doc, want);
}

TEST_F(Gpt2, RoundTripsMixedTextAndArbitraryBytes) {
  const std::vector<std::string> texts = {
      "",
      "Hello, world!\n\nThe quick brown fox -- 3.14159 -- jumps   over\tthe lazy dog's tail.\n",
      "Ünïcödé façade «quoted» ½ ² Ⅻ ١٢٣ 🙂👍🏽 日本語のテキスト 한국어 "
      "עִבְרִית",
      "  leading and trailing   \r\n",
      "def f(x):\n    return x**2  # comment\n",
      "bad utf-8: \xff\xfe \xc3 \xe2\x82 \xed\xa0\x80 end\x80",
  };
  for (const std::string& s : texts) {
    Ids ids = tok().encode(s);
    for (int32_t id : ids) EXPECT_TRUE(id >= 0 && id < 50257) << id;
    EXPECT_EQ(tok().decode(ids), s);
  }
}

TEST_F(Gpt2, SafeSplitPointsDoNotChangeTheTokens) {
  const std::string text = "First line.\nsecond  line\n\n  third\nx\n\ny z\n'tis\n4th\n";
  const Ids whole = tok().encode(text);
  int splits = 0;
  for (size_t from = 0; from <= text.size(); ++from) {
    size_t p = tok().safe_split(text, from);
    if (p == std::string::npos) continue;
    ASSERT_GE(p, from);
    ASSERT_LT(p, text.size());
    ++splits;
    Ids parts = tok().encode(std::string_view(text).substr(0, p));
    tok().encode_into(std::string_view(text).substr(p), parts);
    EXPECT_EQ(parts, whole) << "split at " << p;
  }
  EXPECT_GT(splits, 0);
}

TEST_F(Gpt2, DecodeRejectsOutOfRangeIds) {
  EXPECT_CONTAINS(error_of([&] { tok().decode(Ids{1, 50257}); }), "50257");
  EXPECT_CONTAINS(error_of([&] { tok().decode(Ids{-1}); }), "-1");
}

TEST_F(Gpt2, MakeTokenizerByIdLoadsTheAssets) {
  auto t = make_tokenizer("gpt2");
  EXPECT_EQ(t->encode("I'll've don't"), (Ids{40, 1183, 1053, 836, 470}));
}

// ---- byte tokenizer ---------------------------------------------------------------------

TEST(ByteTokenizer, RoundTripsEveryByte) {
  ByteTokenizer tok;
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  Ids ids = tok.encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[size_t(b)], b);
  EXPECT_EQ(tok.decode(ids), all);
  EXPECT_EQ(tok.encode("hi"), (Ids{104, 105}));
  EXPECT_EQ(tok.vocab_size(), 256);
  EXPECT_EQ(tok.id(), "byte");
  EXPECT_FALSE(tok.eot_id().has_value());
  Ids doc;
  tok.encode_document("ab", doc);
  EXPECT_EQ(doc, (Ids{97, 98}));
  EXPECT_CONTAINS(error_of([&] { tok.decode(Ids{256}); }), "256");
  EXPECT_EQ(make_tokenizer("byte")->id(), "byte");
  EXPECT_CONTAINS(error_of([] { make_tokenizer("sentencepiece"); }), "sentencepiece");
}

// ---- loading from small hand-made files (no assets needed) ------------------------------

// encoder.py's bytes_to_unicode(), to write vocabularies.
uint32_t byte_to_cp(int b) {
  bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  if (printable) return uint32_t(b);
  uint32_t n = 0;
  for (int c = 0; c < b; ++c) {
    bool p = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
    if (!p) ++n;
  }
  return 256 + n;
}

// A vocabulary of the 256 bytes (id = byte, written as \u escapes), eot 256,
// "Ġt" 257, plus `extra` entries; one merge "Ġ t".
std::string tiny_encoder(const std::string& extra = "") {
  std::string s = "{\n";
  for (int b = 0; b < 256; ++b) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "\"\\u%04x\": %d,\n", unsigned(byte_to_cp(b)), b);
    s += buf;
  }
  s += "\"<|endoftext|>\": 256,\n\"\\u0120t\": 257" + extra + "\n}\n";
  return s;
}

TEST(Gpt2Loading, HandMadeVocabularyLoadsAndMerges) {
  TempDir dir;
  dir.write("encoder.json", tiny_encoder());
  dir.write("vocab.bpe", "#version: 0.2\n\xC4\xA0 t\n");
  Gpt2Tokenizer tok(dir.str());
  EXPECT_EQ(tok.vocab_size(), 258);
  EXPECT_EQ(*tok.eot_id(), 256);
  EXPECT_EQ(tok.encode("a t"), (Ids{'a', 257}));
  EXPECT_EQ(tok.encode("t "), (Ids{'t', ' '}));
  EXPECT_EQ(tok.decode(Ids{257, 256}), " t<|endoftext|>");
}

TEST(Gpt2Loading, MissingFilesNameThePathAndTheFix) {
  TempDir dir;
  std::string msg = error_of([&] { Gpt2Tokenizer tok(dir.str()); });
  EXPECT_CONTAINS(msg, dir.file("encoder.json"));
  EXPECT_CONTAINS(msg, "scripts/fetch_assets.sh");
  dir.write("encoder.json", tiny_encoder());
  msg = error_of([&] { Gpt2Tokenizer tok(dir.str()); });
  EXPECT_CONTAINS(msg, dir.file("vocab.bpe"));
  EXPECT_CONTAINS(error_of([&] { make_tokenizer("gpt2", dir.file("nowhere")); }),
                  dir.file("nowhere") + "/gpt2/encoder.json");
}

TEST(Gpt2Loading, BadJsonNamesFileLineAndColumn) {
  TempDir dir;
  dir.write("vocab.bpe", "#version: 0.2\n");
  const std::string enc = dir.file("encoder.json");
  auto load_error = [&](const std::string& json) {
    dir.write("encoder.json", json);
    return error_of([&] { Gpt2Tokenizer tok(dir.str()); });
  };
  EXPECT_CONTAINS(load_error("{\"a\": 0,\n ,}"), enc + ":2:2");
  EXPECT_CONTAINS(load_error("{\"a\": 0"), "unexpected end of file");
  EXPECT_CONTAINS(load_error("{\"a\": 1.5}"), "integer");
  EXPECT_CONTAINS(load_error("{\"a\": -1}"), "non-negative");
  EXPECT_CONTAINS(load_error("{\"a\": 0} x"), "after the closing");
  EXPECT_CONTAINS(load_error("{\"\\q\": 0}"), "unknown escape");
  EXPECT_CONTAINS(load_error("{\"\\ud83d\": 0}"), "surrogate");
  EXPECT_CONTAINS(load_error("{\"\\ude00\": 0}"), "unpaired low surrogate");
  // A well-formed surrogate pair decodes to U+1F600, which is outside the byte alphabet.
  EXPECT_CONTAINS(load_error("{\"\\ud83d\\ude00\": 0}"), "U+1F600");
  EXPECT_CONTAINS(load_error(tiny_encoder(",\n\"\\u0120t\": 258")), "given twice");
  EXPECT_CONTAINS(load_error(tiny_encoder(",\n\"zz\": 999")), enc + ":260");
  EXPECT_CONTAINS(load_error("{\"a\": 0}"), "no token for byte");
}

TEST(Gpt2Loading, BadMergesNameFileAndLine) {
  TempDir dir;
  dir.write("encoder.json", tiny_encoder());
  const std::string bpe = dir.file("vocab.bpe");
  auto load_error = [&](const std::string& merges) {
    dir.write("vocab.bpe", merges);
    return error_of([&] { Gpt2Tokenizer tok(dir.str()); });
  };
  std::string msg = load_error("#version: 0.2\n\xC4\xA0 t\nabc\n");
  EXPECT_CONTAINS(msg, bpe + ":3");
  EXPECT_CONTAINS(msg, "two symbols");
  EXPECT_CONTAINS(load_error("#version: 0.2\n\xC4\xA0 t\na b c\n"), bpe + ":3");
  msg = load_error("#version: 0.2\nt t\n");
  EXPECT_CONTAINS(msg, bpe + ":2");
  EXPECT_CONTAINS(msg, "is not in");
  EXPECT_CONTAINS(load_error("#version: 0.2\n\xC4\xA0 t\n\xC4\xA0 t\n"),
                  "repeats the merge on line 2");
}

}  // namespace
}  // namespace keel
