// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011): a value depends only on
// (seed, stream, index), never on the order in which values are drawn, so the same seed gives the
// same weights and shuffles whatever the device or replica count. The draws are MIRROR_HD so a
// CUDA kernel (dropout) gets exactly the host's numbers.
#pragma once

#include <array>
#include <cstdint>

#include "mirror/engine/hd.hpp"

namespace mirror::random {

MIRROR_HD inline std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo) {
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t{0xD2511F53u} * c0;
    const uint64_t p1 = uint64_t{0xCD9E8D57u} * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

// 64 random bits for element `index` of stream `stream`.
MIRROR_HD inline uint64_t bits64(uint64_t seed, uint64_t stream, uint64_t index) {
  const auto r = philox4x32(seed, stream, index);
  return (uint64_t{r[0]} << 32) | r[1];
}

// Uniform float in [0, 1) with 24 random bits.
MIRROR_HD inline float uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return static_cast<float>(bits64(seed, stream, index) >> 40) * (1.0f / 16777216.0f);
}

// Uniform integer in [0, bound) (Lemire's multiply-shift; bias below 2^-32 for bound < 2^32).
// Host only: unsigned __int128 has no device counterpart.
inline uint64_t below(uint64_t seed, uint64_t stream, uint64_t index, uint64_t bound) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(bits64(seed, stream, index)) * bound) >> 64);
}

}  // namespace mirror::random
