// Token shards: writer, mmap reader, prepare_shards and TokenLoader. The
// format is in shard.h; headers are encoded byte by byte (memcpy of
// little-endian integers), so the layout does not depend on struct padding.
#include "trainer/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include "core/error.h"

namespace keel {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian and read by memcpy");

namespace {

namespace fs = std::filesystem;

using Header = std::array<unsigned char, kShardHeaderBytes>;

template <typename T>
void put(Header& h, size_t at, T v) {
  std::memcpy(h.data() + at, &v, sizeof(T));
}

template <typename T>
T get(const unsigned char* p, size_t at) {
  T v;
  std::memcpy(&v, p + at, sizeof(T));
  return v;
}

Header encode_header(uint32_t token_bytes, uint64_t count, const std::string& tokenizer_id,
                     uint32_t vocab_size) {
  Header h{};
  std::memcpy(h.data(), kShardMagic, sizeof(kShardMagic));
  put<uint32_t>(h, 8, kShardVersion);
  put<uint32_t>(h, 12, token_bytes);
  put<uint64_t>(h, 16, count);
  std::memcpy(h.data() + 24, tokenizer_id.data(), tokenizer_id.size());
  put<uint32_t>(h, 56, vocab_size);
  return h;
}

uint32_t token_bytes_for(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// A read-only mapping of a whole file, unmapped on destruction.
struct Mapping {
  const unsigned char* data = nullptr;
  size_t bytes = 0;
};

Mapping map_file(const std::string& path, const char* what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) KEEL_FAIL(what, " '", path, "': cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    KEEL_FAIL(what, " '", path, "': cannot stat: ", std::strerror(err));
  }
  Mapping m;
  m.bytes = size_t(st.st_size);
  if (m.bytes > 0) {
    void* p = ::mmap(nullptr, m.bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      KEEL_FAIL(what, " '", path, "': cannot mmap: ", std::strerror(err));
    }
    // Loaders read front to back: let the kernel read ahead and drop behind.
    ::madvise(p, m.bytes, MADV_SEQUENTIAL);
    m.data = static_cast<const unsigned char*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
  return m;
}

void unmap(Mapping& m) {
  if (m.data) ::munmap(const_cast<unsigned char*>(m.data), m.bytes);
  m = Mapping{};
}

// Removes a file when it goes out of scope unless released: temporaries are
// never left behind by an exception.
class RemoveOnExit {
 public:
  explicit RemoveOnExit(std::string path) : path_(std::move(path)) {}
  ~RemoveOnExit() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  RemoveOnExit(const RemoveOnExit&) = delete;
  RemoveOnExit& operator=(const RemoveOnExit&) = delete;

 private:
  std::string path_;
};

std::string shard_name(const char* split, int64_t index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%s_%06lld.bin", split, static_cast<long long>(index));
  return buf;
}

// "train_000012.bin" / "val_000000.bin": the names prepare_shards owns.
bool is_shard_name(const std::string& name) {
  for (const char* split : {"train_", "val_"}) {
    size_t n = std::strlen(split);
    if (name.size() != n + 6 + 4 || name.compare(0, n, split) != 0) continue;
    if (name.compare(n + 6, 4, ".bin") != 0) continue;
    return std::all_of(name.begin() + long(n), name.begin() + long(n + 6),
                       [](char c) { return c >= '0' && c <= '9'; });
  }
  return false;
}

}  // namespace

// ---- ShardWriter -------------------------------------------------------------------

ShardWriter::ShardWriter(std::string path, std::string tokenizer_id, int64_t vocab_size)
    : path_(std::move(path)),
      tmp_path_(path_ + ".tmp"),
      tokenizer_id_(std::move(tokenizer_id)),
      vocab_size_(vocab_size),
      token_bytes_(token_bytes_for(vocab_size)) {
  KEEL_CHECK(!tokenizer_id_.empty() && tokenizer_id_.size() < kShardTokenizerIdBytes,
             "token shard '", path_, "': tokenizer id \"", tokenizer_id_, "\" must be 1..",
             kShardTokenizerIdBytes - 1, " bytes");
  KEEL_CHECK(tokenizer_id_.find('\0') == std::string::npos, "token shard '", path_,
             "': tokenizer id contains a NUL byte");
  KEEL_CHECK(vocab_size_ > 0 && vocab_size_ <= std::numeric_limits<int32_t>::max(), "token shard '",
             path_, "': vocab size ", vocab_size_, " is not in 1..2^31-1");
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  if (!file_)
    KEEL_FAIL("token shard '", path_, "': cannot create '", tmp_path_, "': ", std::strerror(errno));
  // The real header goes in by finish(), once the count is known.
  Header placeholder{};
  KEEL_CHECK(std::fwrite(placeholder.data(), 1, placeholder.size(), file_) == placeholder.size(),
             "token shard '", path_, "': write failed: ", std::strerror(errno));
}

ShardWriter::~ShardWriter() {
  if (file_) {
    std::fclose(file_);
    ::unlink(tmp_path_.c_str());
  }
}

void ShardWriter::write(std::span<const int32_t> tokens) {
  KEEL_CHECK(file_, "token shard '", path_, "': write after finish()");
  buffer_.resize(tokens.size() * token_bytes_);
  unsigned char* out = buffer_.data();
  for (size_t i = 0; i < tokens.size(); ++i) {
    int32_t t = tokens[i];
    KEEL_CHECK(t >= 0 && t < vocab_size_, "token shard '", path_, "': token ", t, " at index ",
               count_ + int64_t(i), " is outside the vocabulary 0..", vocab_size_ - 1);
    if (token_bytes_ == 2) {
      auto v = uint16_t(t);
      std::memcpy(out + i * 2, &v, 2);
    } else {
      auto v = uint32_t(t);
      std::memcpy(out + i * 4, &v, 4);
    }
  }
  KEEL_CHECK(std::fwrite(buffer_.data(), 1, buffer_.size(), file_) == buffer_.size(),
             "token shard '", path_, "': write failed: ", std::strerror(errno));
  count_ += int64_t(tokens.size());
}

void ShardWriter::finish() {
  KEEL_CHECK(file_, "token shard '", path_, "': finish() called twice");
  Header h = encode_header(token_bytes_, uint64_t(count_), tokenizer_id_, uint32_t(vocab_size_));
  bool ok = std::fseek(file_, 0, SEEK_SET) == 0 &&
            std::fwrite(h.data(), 1, h.size(), file_) == h.size() && std::fflush(file_) == 0;
  int err = errno;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok) {
    ::unlink(tmp_path_.c_str());
    KEEL_FAIL("token shard '", path_, "': write failed: ", std::strerror(err));
  }
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    err = errno;
    ::unlink(tmp_path_.c_str());
    KEEL_FAIL("token shard '", path_, "': cannot rename '", tmp_path_,
              "' into place: ", std::strerror(err));
  }
}

void write_shard(const std::string& path, std::span<const int32_t> tokens,
                 const std::string& tokenizer_id, int64_t vocab_size) {
  ShardWriter w(path, tokenizer_id, vocab_size);
  w.write(tokens);
  w.finish();
}

// ---- TokenShard ----------------------------------------------------------------------

TokenShard::TokenShard(std::string path) : path_(std::move(path)) {
  Mapping m = map_file(path_, "token shard");
  data_ = m.data;
  bytes_ = m.bytes;
  // From here on the destructor will not run if we throw: unmap by hand.
  auto fail_if = [&](bool bad, const std::string& problem) {
    if (!bad) return;
    unmap();
    KEEL_FAIL("token shard '", path_, "': ", problem);
  };
  fail_if(bytes_ < kShardHeaderBytes, detail::cat("truncated header: the file is ", bytes_,
                                                  " bytes, a header is ", kShardHeaderBytes));
  fail_if(std::memcmp(data_, kShardMagic, sizeof(kShardMagic)) != 0,
          "bad magic: not a keel token shard (expected \"KEELTOK\")");
  auto version = get<uint32_t>(data_, 8);
  fail_if(version != kShardVersion, detail::cat("unsupported version ", version,
                                                " (this build reads version ", kShardVersion, ")"));
  token_bytes_ = get<uint32_t>(data_, 12);
  fail_if(token_bytes_ != 2 && token_bytes_ != 4,
          detail::cat("bad token width ", token_bytes_, " bytes (expected 2 or 4)"));
  auto count = get<uint64_t>(data_, 16);
  const char* id = reinterpret_cast<const char*>(data_ + 24);
  size_t id_len = ::strnlen(id, kShardTokenizerIdBytes);
  fail_if(id_len == kShardTokenizerIdBytes, "tokenizer id is not NUL-terminated");
  tokenizer_id_.assign(id, id_len);
  auto vocab = get<uint32_t>(data_, 56);
  fail_if(vocab == 0 || vocab > uint32_t(std::numeric_limits<int32_t>::max()),
          detail::cat("bad vocab size ", vocab));
  fail_if(token_bytes_ == 2 && vocab > 65536,
          detail::cat("vocab size ", vocab, " does not fit 2-byte tokens"));
  vocab_size_ = vocab;
  const uint64_t payload = bytes_ - kShardHeaderBytes;
  fail_if(count > payload / token_bytes_,
          detail::cat("truncated: the header promises ", count, " tokens of ", token_bytes_,
                      " bytes but the file holds ", payload, " bytes after the header"));
  fail_if(count * token_bytes_ != payload,
          detail::cat("size mismatch: ", payload - count * token_bytes_, " bytes follow the ",
                      count, " tokens the header promises"));
  count_ = int64_t(count);
}

TokenShard::~TokenShard() { unmap(); }

TokenShard::TokenShard(TokenShard&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      count_(other.count_),
      vocab_size_(other.vocab_size_),
      token_bytes_(other.token_bytes_),
      tokenizer_id_(std::move(other.tokenizer_id_)) {}

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    count_ = other.count_;
    vocab_size_ = other.vocab_size_;
    token_bytes_ = other.token_bytes_;
    tokenizer_id_ = std::move(other.tokenizer_id_);
  }
  return *this;
}

void TokenShard::unmap() {
  Mapping m{data_, bytes_};
  keel::unmap(m);
  data_ = nullptr;
  bytes_ = 0;
}

template <typename T>
void TokenShard::read_impl(int64_t start, int64_t n, T* out) const {
  KEEL_CHECK(start >= 0 && n >= 0 && start + n <= count_, "token shard '", path_,
             "': cannot read tokens [", start, ", ", start + n, ") of ", count_);
  const unsigned char* p = data_ + kShardHeaderBytes + size_t(start) * token_bytes_;
  if (token_bytes_ == 2) {
    for (int64_t i = 0; i < n; ++i) out[i] = T(get<uint16_t>(p, size_t(i) * 2));
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = T(get<uint32_t>(p, size_t(i) * 4));
  }
}

void TokenShard::read(int64_t start, int64_t n, int32_t* out) const { read_impl(start, n, out); }
void TokenShard::read(int64_t start, int64_t n, int64_t* out) const { read_impl(start, n, out); }

int64_t TokenShard::at(int64_t i) const {
  int64_t v;
  read_impl(i, 1, &v);
  return v;
}

void TokenShard::check_tokens() const {
  const unsigned char* p = data_ + kShardHeaderBytes;
  for (int64_t i = 0; i < count_; ++i) {
    int64_t t = token_bytes_ == 2 ? int64_t(get<uint16_t>(p, size_t(i) * 2))
                                  : int64_t(get<uint32_t>(p, size_t(i) * 4));
    KEEL_CHECK(t < vocab_size_, "token shard '", path_, "': token ", t, " at index ", i,
               " is not below the vocab size ", vocab_size_);
  }
}

// ---- prepare_shards ----------------------------------------------------------------------

namespace {

constexpr size_t kReadBlock = size_t(1) << 20;

// Appends tokens to the raw u32 stream file.
void append_stream(std::FILE* f, const std::vector<int32_t>& tokens, const std::string& path) {
  static_assert(sizeof(int32_t) == sizeof(uint32_t));
  KEEL_CHECK(std::fwrite(tokens.data(), sizeof(int32_t), tokens.size(), f) == tokens.size(),
             "prepare_shards: cannot write '", path, "': ", std::strerror(errno));
}

// Tokenises one file as one document into the stream; returns its byte count.
int64_t tokenize_file(const std::string& input, const Tokenizer& tokenizer, std::FILE* stream,
                      const std::string& stream_path, int64_t& tokens_written) {
  std::FILE* in = std::fopen(input.c_str(), "rb");
  if (!in) KEEL_FAIL("prepare_shards: cannot read '", input, "': ", std::strerror(errno));
  std::string pending;
  std::vector<int32_t> tokens;
  if (auto eot = tokenizer.eot_id()) tokens.push_back(*eot);
  int64_t bytes = 0;
  size_t scan_from = 0;  // safe_split has found nothing in pending before this
  std::vector<char> block(kReadBlock);
  try {
    while (true) {
      size_t got = std::fread(block.data(), 1, block.size(), in);
      KEEL_CHECK(!std::ferror(in), "prepare_shards: error reading '", input, "'");
      pending.append(block.data(), got);
      bytes += int64_t(got);
      if (got < block.size()) break;  // end of file
      // Cut in the second half, so each encode takes a large chunk.
      size_t from = std::max(scan_from, pending.size() / 2);
      size_t cut = tokenizer.safe_split(pending, from);
      if (cut == std::string::npos) {
        scan_from = pending.size();
        continue;
      }
      tokenizer.encode_into(std::string_view(pending).substr(0, cut), tokens);
      append_stream(stream, tokens, stream_path);
      tokens_written += int64_t(tokens.size());
      tokens.clear();
      pending.erase(0, cut);
      scan_from = 0;
    }
    tokenizer.encode_into(pending, tokens);
    append_stream(stream, tokens, stream_path);
    tokens_written += int64_t(tokens.size());
  } catch (...) {
    std::fclose(in);
    throw;
  }
  std::fclose(in);
  return bytes;
}

}  // namespace

PrepareSummary prepare_shards(const std::vector<std::string>& inputs, const Tokenizer& tokenizer,
                              const std::string& out_dir, double val_fraction,
                              int64_t shard_tokens) {
  KEEL_CHECK(!inputs.empty(), "prepare_shards: no input files");
  KEEL_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, "prepare_shards: val_fraction ",
             val_fraction, " must be in [0, 1)");
  KEEL_CHECK(shard_tokens > 0, "prepare_shards: shard_tokens ", shard_tokens, " must be positive");
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  KEEL_CHECK(!ec, "prepare_shards: cannot create '", out_dir, "': ", ec.message());

  // Pass 1: text -> one raw u32 token stream, since the validation split
  // needs the total count before any shard can be cut.
  const std::string stream_path = (fs::path(out_dir) / ".prepare_tokens.tmp").string();
  RemoveOnExit remove_stream(stream_path);
  PrepareSummary summary;
  int64_t total = 0;
  {
    std::FILE* stream = std::fopen(stream_path.c_str(), "wb");
    if (!stream)
      KEEL_FAIL("prepare_shards: cannot create '", stream_path, "': ", std::strerror(errno));
    try {
      for (const std::string& input : inputs) {
        summary.bytes += tokenize_file(input, tokenizer, stream, stream_path, total);
        ++summary.documents;
      }
    } catch (...) {
      std::fclose(stream);
      throw;
    }
    KEEL_CHECK(std::fclose(stream) == 0, "prepare_shards: cannot write '", stream_path,
               "': ", std::strerror(errno));
  }
  summary.val_tokens = int64_t(double(total) * val_fraction);
  summary.train_tokens = total - summary.val_tokens;
  KEEL_CHECK(summary.train_tokens > 0, "prepare_shards: the inputs give ", total,
             " tokens, none left for training");

  // Pass 2: cut the stream into shards.
  Mapping stream = map_file(stream_path, "prepare_shards: token stream");
  struct Unmap {
    Mapping& m;
    ~Unmap() { unmap(m); }
  } unmap_stream{stream};
  KEEL_ASSERT(stream.bytes == size_t(total) * sizeof(int32_t));
  const auto* tokens = reinterpret_cast<const int32_t*>(stream.data);
  const std::string id = tokenizer.id();
  const int64_t vocab = tokenizer.vocab_size();
  auto write_range = [&](const std::string& path, int64_t begin, int64_t end) {
    ShardWriter w(path, id, vocab);
    constexpr int64_t kChunk = int64_t(1) << 20;
    for (int64_t p = begin; p < end; p += kChunk) {
      std::vector<int32_t> chunk(size_t(std::min(kChunk, end - p)));
      std::memcpy(chunk.data(), tokens + p, chunk.size() * sizeof(int32_t));
      w.write(chunk);
    }
    w.finish();
  };
  for (int64_t begin = 0, index = 0; begin < summary.train_tokens; begin += shard_tokens, ++index) {
    std::string path = (fs::path(out_dir) / shard_name("train", index)).string();
    write_range(path, begin, std::min(begin + shard_tokens, summary.train_tokens));
    summary.train_files.push_back(path);
  }
  if (val_fraction > 0.0) {
    summary.val_file = (fs::path(out_dir) / shard_name("val", 0)).string();
    write_range(summary.val_file, summary.train_tokens, total);
  }

  // Shards of an earlier run into the same directory would otherwise be
  // picked up next to these by a glob.
  std::vector<std::string> keep;  // file names
  for (const std::string& f : summary.train_files) keep.push_back(fs::path(f).filename().string());
  if (!summary.val_file.empty()) keep.push_back(fs::path(summary.val_file).filename().string());
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(out_dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (is_shard_name(name) && std::find(keep.begin(), keep.end(), name) == keep.end())
      stale.push_back(it->path());
  }
  KEEL_CHECK(!ec, "prepare_shards: cannot list '", out_dir, "': ", ec.message());
  for (const fs::path& path : stale) {
    fs::remove(path, ec);
    KEEL_CHECK(!ec, "prepare_shards: cannot remove the stale shard '", path.string(),
               "': ", ec.message());
  }
  return summary;
}

// ---- TokenLoader ---------------------------------------------------------------------------

TokenLoader::TokenLoader(std::vector<std::string> files, const TokenLoaderOptions& options)
    : options_(options) {
  const TokenLoaderOptions& o = options_;
  KEEL_CHECK(!files.empty(), "token loader: no shard files");
  KEEL_CHECK(o.batch > 0 && o.seq_len > 0, "token loader: batch ", o.batch, " and seq_len ",
             o.seq_len, " must be positive");
  KEEL_CHECK(o.world > 0 && o.rank >= 0 && o.rank < o.world, "token loader: rank ", o.rank,
             " is not in a world of ", o.world);
  KEEL_CHECK(o.batch % o.world == 0, "token loader: batch ", o.batch,
             " does not split evenly across ", o.world, " data-parallel ranks");
  KEEL_CHECK(o.dtype == DType::I32 || o.dtype == DType::I64, "token loader: dtype ",
             dtype_name(o.dtype), " is not i32 or i64");
  offsets_.push_back(0);
  for (std::string& f : files) {
    TokenShard shard(std::move(f));
    if (!shards_.empty()) {
      const TokenShard& first = shards_.front();
      KEEL_CHECK(
          shard.tokenizer_id() == first.tokenizer_id() && shard.vocab_size() == first.vocab_size(),
          "token loader: '", shard.path(), "' was made by tokenizer \"", shard.tokenizer_id(),
          "\" (vocab ", shard.vocab_size(), ") but '", first.path(), "' by \"",
          first.tokenizer_id(), "\" (vocab ", first.vocab_size(), ")");
    }
    if (o.check_tokens) shard.check_tokens();
    offsets_.push_back(offsets_.back() + shard.size());
    shards_.push_back(std::move(shard));
  }
  KEEL_CHECK(o.dtype == DType::I64 || vocab_size() <= std::numeric_limits<int32_t>::max(),
             "token loader: vocab ", vocab_size(), " needs i64 tokens");
  KEEL_CHECK(total_tokens() >= tokens_per_batch() + 1, "token loader: the ", shards_.size(),
             " shards hold ", total_tokens(),
             " tokens, fewer than one batch needs (B*T + 1 = ", tokens_per_batch() + 1, ")");
}

template <typename T>
void TokenLoader::read_stream(int64_t start, int64_t n, T* out) const {
  // The last shard starting at or before `start` (skips empty shards).
  size_t s =
      size_t(std::upper_bound(offsets_.begin(), offsets_.end(), start) - offsets_.begin()) - 1;
  while (n > 0) {
    KEEL_ASSERT(s < shards_.size(), "read past the end of the token stream");
    int64_t local = start - offsets_[s];
    int64_t take = std::min(n, shards_[s].size() - local);
    shards_[s].read(local, take, out);
    out += take;
    start += take;
    n -= take;
    ++s;
  }
}

TokenBatch TokenLoader::next() {
  const int64_t rows = options_.batch / options_.world;
  const int64_t T = options_.seq_len;
  const int64_t start = next_ + int64_t(options_.rank) * rows * T;
  TokenBatch b;
  b.inputs = empty({rows, T}, options_.dtype);   // (B / world, T)
  b.targets = empty({rows, T}, options_.dtype);  // (B / world, T)
  if (options_.dtype == DType::I32) {
    read_stream(start, rows * T, b.inputs.data<int32_t>());
    read_stream(start + 1, rows * T, b.targets.data<int32_t>());
  } else {
    read_stream(start, rows * T, b.inputs.data<int64_t>());
    read_stream(start + 1, rows * T, b.targets.data<int64_t>());
  }
  next_ += tokens_per_batch();
  if (next_ + tokens_per_batch() + 1 > total_tokens()) {
    next_ = 0;
    ++epoch_;
  }
  return b;
}

LoaderPosition TokenLoader::position() const {
  size_t s =
      size_t(std::upper_bound(offsets_.begin(), offsets_.end(), next_) - offsets_.begin()) - 1;
  return LoaderPosition{int64_t(s), next_ - offsets_[s], epoch_};
}

void TokenLoader::set_position(const LoaderPosition& p) {
  KEEL_CHECK(p.shard >= 0 && p.shard < int64_t(shards_.size()), "token loader: position shard ",
             p.shard, " is not one of the ", shards_.size(), " shards");
  const TokenShard& shard = shards_[size_t(p.shard)];
  KEEL_CHECK(p.offset >= 0 && (p.offset < shard.size() || (p.offset == 0 && shard.size() == 0)),
             "token loader: position offset ", p.offset, " is outside '", shard.path(), "' (",
             shard.size(), " tokens)");
  KEEL_CHECK(p.epoch >= 0, "token loader: position epoch ", p.epoch, " is negative");
  int64_t start = offsets_[size_t(p.shard)] + p.offset;
  KEEL_CHECK(start + tokens_per_batch() + 1 <= total_tokens(), "token loader: position (shard ",
             p.shard, ", offset ", p.offset,
             ") leaves fewer than B*T + 1 = ", tokens_per_batch() + 1,
             " tokens before the end of the ", total_tokens(), "-token stream");
  next_ = start;
  epoch_ = p.epoch;
}

}  // namespace keel
