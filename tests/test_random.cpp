// Tests for engine/random.hpp: Philox4x32-10 against Random123's known answers, and the derived
// draws (uniform, below) for range, determinism and a sane distribution.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <set>

#include "mirror/engine/random.hpp"

namespace mirror::random {
namespace {

// Random123 lists counter words ctr[0..3] and key words k[0..1], least significant first.
// philox4x32(key, counter_hi, counter_lo) packs ctr[0] | ctr[1] << 32 into counter_lo,
// ctr[2] | ctr[3] << 32 into counter_hi and k[0] | k[1] << 32 into key.
std::array<uint32_t, 4> philox_words(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  const uint64_t k = uint64_t{key[0]} | (uint64_t{key[1]} << 32);
  const uint64_t lo = uint64_t{ctr[0]} | (uint64_t{ctr[1]} << 32);
  const uint64_t hi = uint64_t{ctr[2]} | (uint64_t{ctr[3]} << 32);
  return philox4x32(k, hi, lo);
}

// Random123's kat_vectors, the three "philox4x32 10" lines.
TEST(Philox, MatchesRandom123KnownAnswers) {
  using W4 = std::array<uint32_t, 4>;
  EXPECT_EQ(philox_words({0, 0, 0, 0}, {0, 0}), (W4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox_words({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (W4{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox_words({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (W4{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Philox, IsAPureFunctionOfItsArguments) {
  const auto a = philox4x32(42, 7, 1234);
  EXPECT_EQ(a, philox4x32(42, 7, 1234));
  EXPECT_NE(a, philox4x32(43, 7, 1234));
  EXPECT_NE(a, philox4x32(42, 8, 1234));
  EXPECT_NE(a, philox4x32(42, 7, 1235));
  EXPECT_EQ(bits64(42, 7, 1234), bits64(42, 7, 1234));
  EXPECT_EQ(uniform(42, 7, 1234), uniform(42, 7, 1234));
}

TEST(Philox, Bits64DiffersAcrossIndices) {
  std::set<uint64_t> seen;
  for (uint64_t i = 0; i < 10000; ++i) seen.insert(bits64(1, 2, i));
  EXPECT_EQ(seen.size(), 10000u);  // a collision among 10^4 64-bit values would be a bug
}

TEST(Uniform, StaysInUnitIntervalWithSaneMoments) {
  constexpr int kDraws = 200000;
  double sum = 0, sum_sq = 0;
  float lo = 1, hi = 0;
  int buckets[10] = {};
  for (int i = 0; i < kDraws; ++i) {
    const float u = uniform(2024, 3, static_cast<uint64_t>(i));
    ASSERT_GE(u, 0.0f) << "draw " << i;
    ASSERT_LT(u, 1.0f) << "draw " << i;
    sum += u;
    sum_sq += double{u} * u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    ++buckets[static_cast<int>(u * 10)];
  }
  const double mean = sum / kDraws;
  const double variance = sum_sq / kDraws - mean * mean;
  // Standard error of the mean is sqrt(1/12 / 2e5) ~ 6.5e-4; 0.005 is over 7 sigma.
  EXPECT_NEAR(mean, 0.5, 0.005);
  EXPECT_NEAR(variance, 1.0 / 12.0, 0.002);
  EXPECT_LT(lo, 0.001f);
  EXPECT_GT(hi, 0.999f);
  // Each decile expects 20000 draws with a standard deviation of ~134.
  for (int b = 0; b < 10; ++b) EXPECT_NEAR(buckets[b], kDraws / 10, 1000) << "decile " << b;
}

TEST(Below, StaysBelowTheBoundAndCoversIt) {
  for (uint64_t bound : {1u, 2u, 3u, 7u, 10u, 1000u}) {
    std::set<uint64_t> seen;
    for (uint64_t i = 0; i < 20000; ++i) {
      const uint64_t v = below(5, 9, i, bound);
      ASSERT_LT(v, bound) << "bound " << bound << " draw " << i;
      seen.insert(v);
    }
    EXPECT_EQ(seen.size(), bound) << "bound " << bound;
  }
}

}  // namespace
}  // namespace mirror::random
