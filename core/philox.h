// Philox 4x32-10, a counter-based generator (Salmon et al., SC'11). A value
// depends only on (key, counter): element i of a draw at generator offset o
// uses counter (i / 4, o) and lane i % 4, so the numbers are the same on any
// thread count, on CPU and CUDA, and under every parallel layout.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"

namespace keel {

struct Philox4 {
  uint32_t v[4];
};

KEEL_HD uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  *hi = uint32_t(p >> 32);
  return uint32_t(p);
}

// counter = (c0, c1, c2, c3), key = (k0, k1).
KEEL_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                              uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    uint32_t lo0 = philox_mulhilo(kM0, c0, &hi0);
    uint32_t lo1 = philox_mulhilo(kM1, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0;
    uint32_t n1 = lo1;
    uint32_t n2 = hi0 ^ c3 ^ k1;
    uint32_t n3 = lo0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += kW0;
    k1 += kW1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The four 32-bit words for element block `block` of the draw at `offset`.
KEEL_HD Philox4 philox_block(uint64_t seed, uint64_t offset, uint64_t block) {
  return philox4x32_10(uint32_t(block), uint32_t(block >> 32), uint32_t(offset),
                       uint32_t(offset >> 32), uint32_t(seed), uint32_t(seed >> 32));
}

// Uniform in (0, 1]: never 0, so log() in Box-Muller is finite.
KEEL_HD float philox_uniform(uint32_t x) {
  return (float(x >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

// Element i's uniform draw.
KEEL_HD float philox_uniform_at(uint64_t seed, uint64_t offset, uint64_t i) {
  Philox4 r = philox_block(seed, offset, i >> 2);
  return philox_uniform(r.v[i & 3]);
}

// Element i's standard normal draw: Box-Muller on the lane pairs (0,1), (2,3).
KEEL_HD float philox_normal_at(uint64_t seed, uint64_t offset, uint64_t i) {
  Philox4 r = philox_block(seed, offset, i >> 2);
  unsigned pair = unsigned(i & 2);
  float u1 = philox_uniform(r.v[pair]);
  float u2 = philox_uniform(r.v[pair + 1]);
  float rad = sqrtf(-2.0f * logf(u1));
  float ang = 6.283185307179586f * u2;
  return (i & 1) ? rad * sinf(ang) : rad * cosf(ang);
}

// A generator is a seed and a count of draws made so far. Each draw (one
// tensor's worth of numbers) takes the current offset and advances it by one,
// so a saved (seed, offset) pair resumes the exact stream.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }
  uint64_t next_offset() { return offset_++; }

 private:
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};

// The process-wide default generator (like torch.manual_seed's).
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace keel
