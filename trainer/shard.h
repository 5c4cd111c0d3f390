// Token shards: the on-disk form of a tokenised corpus, how to make them from
// text files (prepare_shards), and TokenLoader, which cuts them into (B, T)
// input/target batches with a position that can be saved and restored.
//
// File format (little-endian), a 64-byte header then the tokens:
//   0  magic "KEELTOK\0"      8 bytes
//   8  version                u32 (kShardVersion)
//  12  token width in bytes   u32: 2 (u16) when vocab <= 65536, else 4 (u32)
//  16  token count            u64
//  24  tokenizer id           32 bytes, NUL-padded ("gpt2", "byte")
//  56  vocab size             u32
//  60  reserved               u32, zero
//  64  tokens                 count * width bytes; nothing follows
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "trainer/tokenizer.h"

namespace keel {

inline constexpr char kShardMagic[8] = {'K', 'E', 'E', 'L', 'T', 'O', 'K', '\0'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 64;
inline constexpr size_t kShardTokenizerIdBytes = 32;

// Streams tokens into a new shard. The file is written under a temporary
// name and renamed by finish(), so a shard that exists is always complete;
// one destroyed unfinished leaves nothing behind.
class ShardWriter {
 public:
  ShardWriter(std::string path, std::string tokenizer_id, int64_t vocab_size);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Every token must lie in [0, vocab_size); else keel::Error naming it.
  void write(std::span<const int32_t> tokens);
  void finish();
  int64_t count() const { return count_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string tmp_path_;
  std::string tokenizer_id_;
  int64_t vocab_size_;
  uint32_t token_bytes_;
  std::FILE* file_ = nullptr;
  int64_t count_ = 0;
  std::vector<unsigned char> buffer_;
};

void write_shard(const std::string& path, std::span<const int32_t> tokens,
                 const std::string& tokenizer_id, int64_t vocab_size);

// A shard mapped read-only with mmap: opening validates the header and the
// file size; tokens are read on demand, never loaded whole.
class TokenShard {
 public:
  explicit TokenShard(std::string path);
  ~TokenShard();
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return count_; }  // tokens
  int64_t vocab_size() const { return vocab_size_; }
  const std::string& tokenizer_id() const { return tokenizer_id_; }
  uint32_t token_bytes() const { return token_bytes_; }

  int64_t at(int64_t i) const;
  // Tokens [start, start + n) into out.
  void read(int64_t start, int64_t n, int32_t* out) const;
  void read(int64_t start, int64_t n, int64_t* out) const;
  // Scans every token: one >= vocab_size gives a keel::Error naming the file,
  // the index and the value. Not done on open, which must stay O(1).
  void check_tokens() const;

 private:
  template <typename T>
  void read_impl(int64_t start, int64_t n, T* out) const;
  void unmap();

  std::string path_;
  const unsigned char* data_ = nullptr;  // the whole file, mapped
  size_t bytes_ = 0;
  int64_t count_ = 0;
  int64_t vocab_size_ = 0;
  uint32_t token_bytes_ = 0;
  std::string tokenizer_id_;
};

struct PrepareSummary {
  std::vector<std::string> train_files;
  std::string val_file;   // empty when val_fraction is 0
  int64_t documents = 0;  // input files; each is one document
  int64_t bytes = 0;      // of text read
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
};

// Tokenises `inputs` in order, each file one document (encode_document: eot
// first where the tokenizer has one), and writes <out_dir>/train_NNNNNN.bin
// shards of shard_tokens tokens (the last may be shorter) and, when
// val_fraction > 0, <out_dir>/val_000000.bin holding the last
// floor(total * val_fraction) tokens. Files are streamed in chunks cut where
// Tokenizer::safe_split allows, so their size is not limited by memory.
// Afterwards out_dir holds exactly these shards: train_/val_ shards left by
// an earlier run there are removed, so a glob never mixes two corpora.
PrepareSummary prepare_shards(const std::vector<std::string>& inputs, const Tokenizer& tokenizer,
                              const std::string& out_dir, double val_fraction,
                              int64_t shard_tokens);

// Where a TokenLoader is: the next batch starts at token `offset` of shard
// `shard`; `epoch` counts wraps to the start. Saved in checkpoints.
struct LoaderPosition {
  int64_t shard = 0;
  int64_t offset = 0;
  int64_t epoch = 0;
  bool operator==(const LoaderPosition&) const = default;
};

struct TokenBatch {
  Tensor inputs;   // (B / world, T)
  Tensor targets;  // (B / world, T): inputs shifted by one token
};

struct TokenLoaderOptions {
  int64_t batch = 1;    // B: rows of the global batch, across all ranks
  int64_t seq_len = 1;  // T
  int world = 1;        // data-parallel ranks; must divide batch
  int rank = 0;
  DType dtype = DType::I32;   // I32 or I64
  bool check_tokens = false;  // scan every shard for tokens >= vocab on open
};

// Reads the shards as one token stream, in order. Global batch k covers
// stream tokens [p, p + B*T], p = k*B*T: row b is inputs = tokens[p + b*T,
// p + b*T + T), targets = the same window shifted by one. Windows may cross
// shard boundaries. Rank r gets rows [r*B/world, (r+1)*B/world), so the
// global batch does not depend on the world size. When fewer than B*T + 1
// tokens are left, the loader wraps to the start and counts an epoch.
class TokenLoader {
 public:
  TokenLoader(std::vector<std::string> files, const TokenLoaderOptions& options);

  TokenBatch next();
  LoaderPosition position() const;  // of the batch next() returns next
  // Continues from a saved position; keel::Error when it does not fit these shards.
  void set_position(const LoaderPosition& position);
  void reset() { set_position(LoaderPosition{}); }

  int64_t total_tokens() const { return offsets_.back(); }
  int64_t batches_per_epoch() const { return (total_tokens() - 1) / tokens_per_batch(); }
  int64_t tokens_per_batch() const { return options_.batch * options_.seq_len; }  // global
  int64_t vocab_size() const { return shards_.front().vocab_size(); }
  const std::string& tokenizer_id() const { return shards_.front().tokenizer_id(); }
  size_t num_shards() const { return shards_.size(); }

 private:
  template <typename T>
  void read_stream(int64_t start, int64_t n, T* out) const;

  TokenLoaderOptions options_;
  std::vector<TokenShard> shards_;
  std::vector<int64_t> offsets_;  // shard s starts at stream token offsets_[s]; back() = total
  int64_t next_ = 0;              // stream offset of the next global batch
  int64_t epoch_ = 0;
};

}  // namespace keel
