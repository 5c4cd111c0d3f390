// Tokenizers: text <-> token ids. ByteTokenizer gives one id per byte;
// Gpt2Tokenizer is byte-level BPE that reproduces OpenAI's GPT-2 encoder id
// for id (same pre-tokenisation regex, byte-to-unicode table and merge
// order), loaded from encoder.json + vocab.bpe (scripts/fetch_assets.sh puts
// them in <assets>/gpt2). Token shards record Tokenizer::id() and
// vocab_size(), so data and model can be checked against each other.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace keel {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Appends the ids of `text`. Special tokens are never recognised in text:
  // a literal "<|endoftext|>" is encoded as ordinary characters, so a corpus
  // cannot inject control tokens; use encode_document to place eot.
  virtual void encode_into(std::string_view text, std::vector<int32_t>& out) const = 0;
  // The bytes of `ids`, concatenated. Exact inverse of encode; the result can
  // end inside a multi-byte UTF-8 character when the ids were cut there.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  // Short name written into shard headers ("gpt2", "byte"); at most 31 bytes.
  virtual std::string id() const = 0;
  // The end-of-text token that separates documents, if the vocabulary has one.
  virtual std::optional<int32_t> eot_id() const { return std::nullopt; }
  // The first byte position p >= from at which text may be cut so that
  // encode(text[0, p)) + encode(text[p, end)) == encode(text), or npos when
  // none is known. Lets prepare_shards stream files of any size in chunks.
  virtual size_t safe_split(std::string_view text, size_t from) const;

  std::vector<int32_t> encode(std::string_view text) const;
  // One document of a corpus: eot first (when the tokenizer has one), then
  // the text. As in llm.c, every document starts with eot, so the model
  // always sees a document boundary before a document's first token.
  void encode_document(std::string_view text, std::vector<int32_t>& out) const;
};

// One id per byte (vocab 256, no eot): the tokenizer for tests and for
// character-level models.
class ByteTokenizer final : public Tokenizer {
 public:
  void encode_into(std::string_view text, std::vector<int32_t>& out) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return 256; }
  std::string id() const override { return "byte"; }
  size_t safe_split(std::string_view text, size_t from) const override;
};

// GPT-2's byte-level BPE. Loading checks every entry: a missing or malformed
// file gives a keel::Error naming the file and line. encode is thread-safe
// (the word cache is guarded by a mutex).
class Gpt2Tokenizer final : public Tokenizer {
 public:
  // Reads <dir>/encoder.json and <dir>/vocab.bpe.
  explicit Gpt2Tokenizer(const std::string& dir);

  void encode_into(std::string_view text, std::vector<int32_t>& out) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return int32_t(pieces_.size()); }
  std::string id() const override { return "gpt2"; }
  std::optional<int32_t> eot_id() const override { return eot_; }
  size_t safe_split(std::string_view text, size_t from) const override;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;  // id of the concatenation
  };
  // Appends the ids of one pre-token (a regex match) after BPE.
  void bpe(std::string_view word, std::vector<int32_t>& out) const;

  std::vector<std::string> pieces_;             // id -> its raw bytes
  std::array<int32_t, 256> byte_ids_{};         // byte -> its one-byte token
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  int32_t eot_ = -1;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// Where fetch_assets.sh puts data files: $KEEL_ASSETS, else <source>/assets.
std::string default_assets_dir();
// The ids make_tokenizer knows, in its order ("byte", "gpt2").
std::vector<std::string> tokenizer_ids();
// A tokenizer by its id() ("byte", "gpt2"); gpt2 loads from <assets_dir>/gpt2.
std::unique_ptr<Tokenizer> make_tokenizer(std::string_view id,
                                          const std::string& assets_dir = default_assets_dir());

}  // namespace keel
