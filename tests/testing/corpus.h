// A small byte-tokenised corpus with structure a tiny GPT can learn
// (repeated verses), written as <dir>/train.bin and <dir>/val.bin (90/10).
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "trainer/shard.h"
#include "trainer/tokenizer.h"

namespace keel::testing {

inline void write_verse_shards(const std::filesystem::path& dir) {
  std::string text;
  for (int i = 0; i < 200; ++i)
    text += "In the beginning God created the heaven and the earth. " + std::to_string(i % 7) + "\n";
  ByteTokenizer tok;
  std::vector<int32_t> ids = tok.encode(text);
  const size_t cut = ids.size() * 9 / 10;
  write_shard((dir / "train.bin").string(), std::span(ids).first(cut), "byte", 256);
  write_shard((dir / "val.bin").string(), std::span(ids).subspan(cut), "byte", 256);
}

}  // namespace keel::testing
