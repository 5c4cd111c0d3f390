// Token shards: write/read round trips, header validation on corrupted files,
// prepare_shards, and TokenLoader batches, resume and data-parallel splits.
#include "trainer/shard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/testing/temp_dir.h"
#include "trainer/tokenizer.h"

namespace keel {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;

using testing::error_of;

// Temporary directories named after this file's tests.
class TempDir : public testing::TempDir {
 public:
  TempDir() : testing::TempDir("shard") {}
};

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

Ids all_tokens(const TokenShard& s) {
  Ids v(size_t(s.size()));
  s.read(0, s.size(), v.data());
  return v;
}

// Deterministic tokens below `vocab` that differ from their neighbours.
Ids pattern(int64_t n, int64_t vocab, int64_t salt = 0) {
  Ids v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = int32_t((i * 7919 + salt * 104729 + 13) % vocab);
  return v;
}

std::vector<int64_t> values(const Tensor& t) {
  std::vector<int64_t> out;
  if (t.dtype() == DType::I32) {
    for (int32_t v : t.to_vector<int32_t>()) out.push_back(v);
  } else {
    out = t.to_vector<int64_t>();
  }
  return out;
}

// ---- format ---------------------------------------------------------------------------

TEST(TokenShard, RoundTripsU16AndU32) {
  TempDir dir;
  struct Case {
    int64_t vocab;
    uint32_t width;
  };
  for (Case c : {Case{50257, 2}, Case{65536, 2}, Case{100277, 4}}) {
    const std::string path = dir.file(detail::cat("s", c.vocab, ".bin"));
    Ids tokens = pattern(1000, c.vocab);
    tokens[3] = int32_t(c.vocab - 1);  // the largest id survives the narrow type
    write_shard(path, tokens, "gpt2", c.vocab);
    EXPECT_EQ(fs::file_size(path), kShardHeaderBytes + tokens.size() * c.width);
    EXPECT_EQ(read_bytes(path).substr(0, 8), std::string("KEELTOK\0", 8));
    TokenShard s(path);
    EXPECT_EQ(s.size(), 1000);
    EXPECT_EQ(s.vocab_size(), c.vocab);
    EXPECT_EQ(s.token_bytes(), c.width);
    EXPECT_EQ(s.tokenizer_id(), "gpt2");
    EXPECT_EQ(all_tokens(s), tokens);
    EXPECT_EQ(s.at(3), c.vocab - 1);
    std::vector<int64_t> mid(10);
    s.read(500, 10, mid.data());
    for (int i = 0; i < 10; ++i) EXPECT_EQ(mid[size_t(i)], tokens[size_t(500 + i)]);
    s.check_tokens();
    EXPECT_CONTAINS(error_of([&] { s.read(995, 6, mid.data()); }), "[995, 1001)");
  }
  // An empty shard is valid.
  write_shard(dir.file("empty.bin"), Ids{}, "byte", 256);
  EXPECT_EQ(TokenShard(dir.file("empty.bin")).size(), 0);
}

TEST(TokenShard, WriterStreamsAndLeavesNothingWhenUnfinished) {
  TempDir dir;
  {
    ShardWriter w(dir.file("a.bin"), "byte", 256);
    w.write(Ids{1, 2, 3});
    w.write(Ids{4});
    EXPECT_EQ(w.count(), 4);
    w.finish();
  }
  EXPECT_EQ(all_tokens(TokenShard(dir.file("a.bin"))), (Ids{1, 2, 3, 4}));
  {
    ShardWriter w(dir.file("b.bin"), "byte", 256);
    w.write(Ids{1, 2});
  }
  EXPECT_FALSE(fs::exists(dir.file("b.bin")));
  EXPECT_FALSE(fs::exists(dir.file("b.bin.tmp")));
}

TEST(TokenShard, WriterRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("w.bin");
  std::string msg = error_of([&] { write_shard(path, Ids{1, 256}, "byte", 256); });
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "token 256 at index 1");
  EXPECT_CONTAINS(error_of([&] { write_shard(path, Ids{1}, std::string(32, 'x'), 256); }),
                  "tokenizer id");
  EXPECT_CONTAINS(error_of([&] { write_shard(path, Ids{1}, "byte", 0); }), "vocab size");
  EXPECT_FALSE(fs::exists(path));
}

TEST(TokenShard, CorruptedFilesAreRefusedWithTheProblem) {
  TempDir dir;
  const std::string good = dir.file("good.bin");
  write_shard(good, pattern(100, 50257), "gpt2", 50257);
  const std::string bytes = read_bytes(good);
  auto open_error = [&](const std::string& name, const std::string& contents) {
    const std::string path = dir.file(name);
    write_bytes(path, contents);
    std::string msg = error_of([&] { TokenShard s(path); });
    EXPECT_CONTAINS(msg, path);
    return msg;
  };
  std::string bad = bytes;
  bad[0] = 'X';
  EXPECT_CONTAINS(open_error("magic.bin", bad), "bad magic");
  bad = bytes;
  uint32_t version = 7;
  std::memcpy(bad.data() + 8, &version, 4);
  EXPECT_CONTAINS(open_error("version.bin", bad), "unsupported version 7");
  EXPECT_CONTAINS(open_error("truncated.bin", bytes.substr(0, bytes.size() - 1)), "truncated");
  EXPECT_CONTAINS(open_error("long.bin", bytes + "xx"), "2 bytes follow");
  EXPECT_CONTAINS(open_error("short.bin", bytes.substr(0, 20)), "truncated header");
  bad = bytes;
  uint32_t width = 3;
  std::memcpy(bad.data() + 12, &width, 4);
  EXPECT_CONTAINS(open_error("width.bin", bad), "token width 3");
  bad = bytes;
  std::memset(bad.data() + 24, 'a', kShardTokenizerIdBytes);
  EXPECT_CONTAINS(open_error("id.bin", bad), "NUL-terminated");
  const std::string missing = dir.file("missing.bin");
  std::string msg = error_of([&] { TokenShard s(missing); });
  EXPECT_CONTAINS(msg, missing);
  EXPECT_CONTAINS(msg, "cannot open");
}

TEST(TokenShard, TokensAboveTheVocabAreFoundOnRequest) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_shard(path, pattern(64, 1000), "tiny", 1000);
  std::string bytes = read_bytes(path);
  uint16_t big = 5000;  // the header says vocab 1000
  std::memcpy(bytes.data() + kShardHeaderBytes + 2 * 17, &big, 2);
  write_bytes(path, bytes);
  TokenShard s(path);  // opening stays O(1): no scan
  std::string msg = error_of([&] { s.check_tokens(); });
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "token 5000 at index 17");
  msg = error_of([&] { TokenLoader l({path}, {.batch = 1, .seq_len = 4, .check_tokens = true}); });
  EXPECT_CONTAINS(msg, "token 5000 at index 17");
}

// ---- prepare_shards ----------------------------------------------------------------------

TEST(PrepareShards, SplitsTrainAndValidationAndRemovesStaleShards) {
  TempDir dir;
  const std::string a = "first document\nwith two lines\n";
  const std::string b = "second one";
  write_bytes(dir.file("a.txt"), a);
  write_bytes(dir.file("b.txt"), b);
  const std::string out = dir.file("shards");
  fs::create_directories(out);
  write_shard(out + "/train_000099.bin", Ids{1}, "byte", 256);  // from an "earlier run"
  write_bytes(out + "/notes.txt", "kept");
  ByteTokenizer tok;
  PrepareSummary sum = prepare_shards({dir.file("a.txt"), dir.file("b.txt")}, tok, out, 0.25, 16);
  const int64_t total = int64_t(a.size() + b.size());
  EXPECT_EQ(sum.documents, 2);
  EXPECT_EQ(sum.bytes, total);
  EXPECT_EQ(sum.val_tokens, total / 4);
  EXPECT_EQ(sum.train_tokens, total - total / 4);
  ASSERT_EQ(sum.train_files.size(), size_t((sum.train_tokens + 15) / 16));
  EXPECT_EQ(sum.train_files[0], out + "/train_000000.bin");
  EXPECT_EQ(sum.val_file, out + "/val_000000.bin");
  std::string stream;
  for (size_t i = 0; i < sum.train_files.size(); ++i) {
    TokenShard s(sum.train_files[i]);
    EXPECT_EQ(s.tokenizer_id(), "byte");
    EXPECT_EQ(s.size(), i + 1 < sum.train_files.size() ? 16 : sum.train_tokens - 16 * int64_t(i));
    stream += tok.decode(all_tokens(s));
  }
  TokenShard val(sum.val_file);
  EXPECT_EQ(val.size(), sum.val_tokens);
  EXPECT_EQ(stream.size(), size_t(sum.train_tokens));
  stream += tok.decode(all_tokens(val));
  EXPECT_EQ(stream, a + b);
  EXPECT_FALSE(fs::exists(out + "/train_000099.bin"));
  EXPECT_TRUE(fs::exists(out + "/notes.txt"));
  EXPECT_FALSE(fs::exists(out + "/.prepare_tokens.tmp"));

  // Without validation, the earlier val shard goes too.
  sum = prepare_shards({dir.file("a.txt")}, tok, out, 0.0, 1000);
  EXPECT_TRUE(sum.val_file.empty());
  EXPECT_EQ(sum.train_files.size(), 1u);
  EXPECT_FALSE(fs::exists(out + "/val_000000.bin"));
}

TEST(PrepareShards, StreamsLargeFilesInChunks) {
  TempDir dir;
  // Over 2 MiB, so the file is read in several blocks; lines end in a way
  // that leaves few safe cut points.
  std::string text;
  for (int i = 0; text.size() < (size_t(5) << 19); ++i)
    text += detail::cat("line ", i, i % 3 ? " end.\n" : "  \n\n");
  write_bytes(dir.file("big.txt"), text);
  ByteTokenizer tok;
  PrepareSummary sum =
      prepare_shards({dir.file("big.txt")}, tok, dir.file("out"), 0.0, int64_t(1) << 20);
  std::string back;
  for (const std::string& f : sum.train_files) back += tok.decode(all_tokens(TokenShard(f)));
  EXPECT_EQ(back, text);
}

TEST(PrepareShards, RejectsBadArguments) {
  TempDir dir;
  ByteTokenizer tok;
  const std::string missing = dir.file("missing.txt");
  EXPECT_CONTAINS(error_of([&] { prepare_shards({missing}, tok, dir.file("o"), 0.1, 100); }),
                  missing);
  write_bytes(dir.file("a.txt"), "abc");
  EXPECT_CONTAINS(
      error_of([&] { prepare_shards({dir.file("a.txt")}, tok, dir.file("o"), 1.0, 100); }),
      "val_fraction");
  EXPECT_CONTAINS(
      error_of([&] { prepare_shards({dir.file("a.txt")}, tok, dir.file("o"), 0.1, 0); }),
      "shard_tokens");
  EXPECT_CONTAINS(error_of([&] { prepare_shards({}, tok, dir.file("o"), 0.1, 10); }), "no input");
}

class PrepareGpt2 : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = default_assets_dir() + "/gpt2";
    if (!fs::exists(dir + "/encoder.json") || !fs::exists(dir + "/vocab.bpe")) {
      FAIL() << "GPT-2 vocabulary not found in " << dir
             << ": run scripts/fetch_assets.sh (or point KEEL_ASSETS at a directory holding gpt2/)";
    }
    tok_ = std::make_unique<Gpt2Tokenizer>(dir);
  }
  std::unique_ptr<Gpt2Tokenizer> tok_;
};

TEST_F(PrepareGpt2, DocumentsStartWithEotAndChunkingMatchesWholeEncoding) {
  TempDir dir;
  std::string big;
  for (int i = 0; big.size() < (size_t(3) << 19); ++i)
    big += detail::cat("Paragraph ", i, ": it's   naïve, isn't it?\n", i % 5 ? "" : "\n   \n");
  const std::string small = "The end.";
  write_bytes(dir.file("big.txt"), big);
  write_bytes(dir.file("small.txt"), small);
  PrepareSummary sum = prepare_shards({dir.file("big.txt"), dir.file("small.txt")}, *tok_,
                                      dir.file("out"), 0.0, 100000);
  Ids want;
  tok_->encode_document(big, want);
  tok_->encode_document(small, want);
  Ids got;
  for (const std::string& f : sum.train_files) {
    TokenShard s(f);
    EXPECT_EQ(s.tokenizer_id(), "gpt2");
    EXPECT_EQ(s.vocab_size(), 50257);
    EXPECT_EQ(s.token_bytes(), 2u);
    Ids part = all_tokens(s);
    got.insert(got.end(), part.begin(), part.end());
  }
  EXPECT_EQ(got.front(), 50256);
  EXPECT_EQ(got, want);
}

// ---- TokenLoader -------------------------------------------------------------------------

// Three shards of uneven length holding pattern(147, 1000) in order.
struct ThreeShards {
  TempDir dir;
  Ids stream = pattern(147, 1000);
  std::vector<std::string> files;
  ThreeShards() {
    int64_t cuts[] = {0, 50, 87, 147};
    for (int s = 0; s < 3; ++s) {
      files.push_back(dir.file(detail::cat("train_", s, ".bin")));
      write_shard(files.back(),
                  std::span<const int32_t>(stream.data() + cuts[s], size_t(cuts[s + 1] - cuts[s])),
                  "tiny", 1000);
    }
  }
};

TEST(TokenLoader, BatchesAreShiftedWindowsOfTheStream) {
  ThreeShards data;
  const int64_t B = 2, T = 5;
  for (DType dtype : {DType::I32, DType::I64}) {
    TokenLoader loader(data.files, {.batch = B, .seq_len = T, .dtype = dtype});
    EXPECT_EQ(loader.total_tokens(), 147);
    EXPECT_EQ(loader.batches_per_epoch(), 14);  // (147 - 1) / 10
    EXPECT_EQ(loader.vocab_size(), 1000);
    EXPECT_EQ(loader.tokenizer_id(), "tiny");
    for (int64_t k = 0; k < 30; ++k) {  // two wraps; windows cross shard boundaries at 50 and 87
      const int64_t epoch = k / 14, p = (k % 14) * B * T;
      EXPECT_EQ(loader.position().epoch, epoch);
      TokenBatch b = loader.next();
      ASSERT_EQ(b.inputs.sizes(), (Shape{B, T}));
      ASSERT_EQ(b.targets.sizes(), (Shape{B, T}));
      EXPECT_EQ(b.inputs.dtype(), dtype);
      std::vector<int64_t> in = values(b.inputs), tg = values(b.targets);
      for (int64_t i = 0; i < B * T; ++i) {
        EXPECT_EQ(in[size_t(i)], data.stream[size_t(p + i)]) << "batch " << k << " element " << i;
        EXPECT_EQ(tg[size_t(i)], data.stream[size_t(p + i + 1)])
            << "batch " << k << " element " << i;
      }
    }
  }
}

TEST(TokenLoader, PositionSaveAndRestoreContinuesIdentically) {
  ThreeShards data;
  TokenLoader a(data.files, {.batch = 3, .seq_len = 4});
  for (int k = 0; k < 4; ++k) a.next();
  const LoaderPosition saved = a.position();
  EXPECT_EQ(saved, (LoaderPosition{0, 48, 0}));
  std::vector<std::vector<int64_t>> rest;
  for (int k = 0; k < 20; ++k) {  // past the wrap at 12 batches
    TokenBatch b = a.next();
    rest.push_back(values(b.inputs));
    rest.push_back(values(b.targets));
  }
  TokenLoader resumed(data.files, {.batch = 3, .seq_len = 4});
  resumed.set_position(saved);
  EXPECT_EQ(resumed.position(), saved);
  for (int k = 0; k < 20; ++k) {
    TokenBatch b = resumed.next();
    EXPECT_EQ(values(b.inputs), rest[size_t(2 * k)]) << "batch " << k;
    EXPECT_EQ(values(b.targets), rest[size_t(2 * k + 1)]) << "batch " << k;
  }
  EXPECT_EQ(resumed.position(), a.position());
  EXPECT_EQ(a.position().epoch, 2);  // 12 batches an epoch: 4 + 20 = two wraps
  // Positions name the shard holding the next batch.
  resumed.set_position({2, 10, 3});
  EXPECT_EQ(resumed.position(), (LoaderPosition{2, 10, 3}));
  EXPECT_EQ(values(resumed.next().inputs)[0], data.stream[87 + 10]);
  resumed.reset();
  EXPECT_EQ(resumed.position(), (LoaderPosition{}));
}

TEST(TokenLoader, RanksSplitTheGlobalBatchByRows) {
  ThreeShards data;
  const int64_t B = 4, T = 3;
  TokenLoader whole(data.files, {.batch = B, .seq_len = T});
  std::vector<TokenLoader> halves, quarters;
  for (int r = 0; r < 2; ++r)
    halves.emplace_back(data.files,
                        TokenLoaderOptions{.batch = B, .seq_len = T, .world = 2, .rank = r});
  for (int r = 0; r < 4; ++r)
    quarters.emplace_back(data.files,
                          TokenLoaderOptions{.batch = B, .seq_len = T, .world = 4, .rank = r});
  for (int k = 0; k < 15; ++k) {  // past the wrap at 12 batches
    TokenBatch g = whole.next();
    for (std::vector<TokenLoader>* ranks : {&halves, &quarters}) {
      std::vector<int64_t> in, tg;
      for (TokenLoader& l : *ranks) {
        TokenBatch b = l.next();
        EXPECT_EQ(b.inputs.sizes(), (Shape{B / int64_t(ranks->size()), T}));
        for (int64_t v : values(b.inputs)) in.push_back(v);
        for (int64_t v : values(b.targets)) tg.push_back(v);
        EXPECT_EQ(l.position(), whole.position());
      }
      EXPECT_EQ(in, values(g.inputs)) << "batch " << k << ", world " << ranks->size();
      EXPECT_EQ(tg, values(g.targets)) << "batch " << k << ", world " << ranks->size();
    }
  }
}

TEST(TokenLoader, RejectsBadSetups) {
  ThreeShards data;
  EXPECT_CONTAINS(
      error_of([&] { TokenLoader l(data.files, {.batch = 3, .seq_len = 4, .world = 2}); }),
      "does not split evenly");
  EXPECT_CONTAINS(error_of([&] {
                    TokenLoader l(data.files, {.batch = 2, .seq_len = 4, .world = 2, .rank = 2});
                  }),
                  "rank 2");
  EXPECT_CONTAINS(error_of([&] { TokenLoader l(data.files, {.batch = 10, .seq_len = 15}); }),
                  "fewer than one batch");
  EXPECT_CONTAINS(error_of([&] { TokenLoader l({}, {}); }), "no shard files");
  EXPECT_CONTAINS(error_of([&] { TokenLoader l(data.files, {.dtype = DType::F32}); }),
                  "i32 or i64");
  const std::string other = data.dir.file("other.bin");
  write_shard(other, Ids{1, 2, 3}, "byte", 256);
  std::string msg = error_of([&] { TokenLoader l({data.files[0], other}, {}); });
  EXPECT_CONTAINS(msg, other);
  EXPECT_CONTAINS(msg, "\"byte\"");
  TokenLoader l(data.files, {.batch = 2, .seq_len = 5});
  EXPECT_CONTAINS(error_of([&] { l.set_position({3, 0, 0}); }), "shard 3");
  EXPECT_CONTAINS(error_of([&] { l.set_position({1, 37, 0}); }), "offset 37");
  EXPECT_CONTAINS(error_of([&] { l.set_position({2, 55, 0}); }), "fewer than B*T + 1");
}

}  // namespace
}  // namespace keel
