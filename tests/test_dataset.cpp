// Tests for the dataset helpers: per-epoch shuffling (a reproducible permutation), batching that
// keeps the last partial batch, label checks with actionable messages, class_count and head,
// synthetic images of any channel count.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "mirror/engine/data/dataset.hpp"
#include "mirror/engine/error.hpp"

namespace mirror::data {
namespace {

#define EXPECT_CONTAINS(text, word) EXPECT_NE(std::string(text).find(word), std::string::npos) << "in: " << (text)

std::vector<int32_t> identity(int64_t count) {
  std::vector<int32_t> v(static_cast<size_t>(count));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

ImageSet tiny_set(std::vector<int32_t> labels) {
  ImageSet s;
  s.count = static_cast<int64_t>(labels.size());
  s.height = 2;
  s.width = 2;
  s.channels = 1;
  s.pixels.resize(static_cast<size_t>(s.count * 4));
  std::iota(s.pixels.begin(), s.pixels.end(), uint8_t{0});
  s.labels = std::move(labels);
  return s;
}

TEST(Shuffle, IsAPermutation) {
  for (int64_t count : {0, 1, 2, 7, 1000, 60000}) {
    auto order = shuffled_indices(count, 1234, 0);
    ASSERT_EQ(static_cast<int64_t>(order.size()), count);
    std::sort(order.begin(), order.end());
    EXPECT_EQ(order, identity(count)) << "count " << count;
  }
}

TEST(Shuffle, IsReproducibleForTheSameSeedAndEpoch) {
  EXPECT_EQ(shuffled_indices(5000, 42, 3), shuffled_indices(5000, 42, 3));
}

TEST(Shuffle, DiffersAcrossEpochsAndSeeds) {
  const auto base = shuffled_indices(5000, 42, 0);
  EXPECT_NE(base, identity(5000));
  EXPECT_NE(base, shuffled_indices(5000, 42, 1));
  EXPECT_NE(base, shuffled_indices(5000, 43, 0));
  EXPECT_NE(shuffled_indices(5000, 42, 1), shuffled_indices(5000, 42, 2));
}

TEST(Shuffle, MovesEverySampleWithUniformPositions) {
  // Over many epochs each of 4 samples should land in each position about a quarter of the time.
  constexpr int kEpochs = 8000;
  int counts[4][4] = {};
  for (uint64_t epoch = 0; epoch < kEpochs; ++epoch) {
    const auto order = shuffled_indices(4, 7, epoch);
    for (int pos = 0; pos < 4; ++pos) ++counts[order[static_cast<size_t>(pos)]][pos];
  }
  // Expected 2000 each, standard deviation ~39; 250 is over 6 sigma.
  for (int s = 0; s < 4; ++s) {
    for (int p = 0; p < 4; ++p) EXPECT_NEAR(counts[s][p], kEpochs / 4, 250) << "sample " << s << " position " << p;
  }
}

TEST(Shuffle, RejectsNegativeCount) { EXPECT_THROW(shuffled_indices(-1, 0, 0), InvalidArgument); }

TEST(Batching, KeepsTheLastPartialBatch) {
  const auto order = identity(10);
  ASSERT_EQ(batch_count(10, 4), 3);
  std::vector<size_t> sizes;
  std::vector<int32_t> seen;
  for (int64_t b = 0; b < batch_count(10, 4); ++b) {
    const auto batch = batch_indices(order, 4, b);
    sizes.push_back(batch.size());
    seen.insert(seen.end(), batch.begin(), batch.end());
  }
  EXPECT_EQ(sizes, (std::vector<size_t>{4, 4, 2}));
  EXPECT_EQ(seen, order);
}

TEST(Batching, Counts) {
  EXPECT_EQ(batch_count(0, 32), 0);
  EXPECT_EQ(batch_count(1, 32), 1);
  EXPECT_EQ(batch_count(32, 32), 1);
  EXPECT_EQ(batch_count(33, 32), 2);
  EXPECT_EQ(batch_count(60000, 32), 1875);
  EXPECT_EQ(batch_count(10000, 3), 3334);
}

TEST(Batching, FollowsTheShuffledOrder) {
  const auto order = shuffled_indices(10, 5, 1);
  const auto batch = batch_indices(order, 4, 1);
  ASSERT_EQ(batch.size(), 4u);
  EXPECT_TRUE(std::equal(batch.begin(), batch.end(), order.begin() + 4));
}

TEST(Batching, RejectsBadArgumentsWithHelpfulMessages) {
  const auto order = identity(10);
  try {
    batch_count(10, 0);
    FAIL() << "batch_count(10, 0) did not throw";
  } catch (const InvalidArgument& e) {
    EXPECT_CONTAINS(e.what(), "batch_size must be positive");
    EXPECT_CONTAINS(e.what(), "got 0");
  }
  EXPECT_THROW(batch_count(10, -3), InvalidArgument);
  EXPECT_THROW(batch_indices(order, 0, 0), InvalidArgument);
  EXPECT_THROW(batch_indices(order, 4, 3), InvalidArgument);
  EXPECT_THROW(batch_indices(order, 4, -1), InvalidArgument);
}

TEST(CheckLabels, AcceptsLabelsInRange) { EXPECT_NO_THROW(check_labels(tiny_set({0, 9, 3}), 10, "training set")); }

TEST(CheckLabels, NamesTheLabelItsIndexAndTheClassCount) {
  std::vector<int32_t> labels(6000, 1);
  labels[5031] = 12;
  try {
    check_labels(tiny_set(labels), 10, "training set");
    FAIL() << "label 12 was accepted";
  } catch (const DataError& e) {
    EXPECT_STREQ(e.what(),
                 "label 12 at index 5031 of the training set is outside [0, 10): the model's last layer has 10 units");
  }
}

TEST(CheckLabels, RejectsNegativeLabels) {
  try {
    check_labels(tiny_set({0, -1}), 10, "test set");
    FAIL() << "label -1 was accepted";
  } catch (const DataError& e) {
    EXPECT_CONTAINS(e.what(), "label -1 at index 1 of the test set");
  }
}

TEST(ImageSet, ClassCountIsOnePlusTheLargestLabel) {
  EXPECT_EQ(tiny_set({}).class_count(), 0);
  EXPECT_EQ(tiny_set({0, 0}).class_count(), 1);
  EXPECT_EQ(tiny_set({3, 9, 2}).class_count(), 10);
}

TEST(ImageSet, HeadTakesTheFirstSamples) {
  const ImageSet s = tiny_set({5, 6, 7, 8});
  const ImageSet h = s.head(2);
  EXPECT_EQ(h.count, 2);
  EXPECT_EQ(h.sample_shape(), (Shape{2, 2, 1}));
  EXPECT_EQ(h.labels, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(h.pixels, std::vector<uint8_t>(s.pixels.begin(), s.pixels.begin() + 8));
  EXPECT_EQ(s.head(100).count, 4);
  EXPECT_EQ(s.head(100).labels, s.labels);
  EXPECT_EQ(s.head(0).count, 0);
  EXPECT_TRUE(s.head(0).pixels.empty());
}

TEST(SyntheticImages, HaveTheShapeAskedForAndOneChannelByDefault) {
  const ImageSet rgb = synthetic_images(3, 5, 4, 10, 7, 3);
  EXPECT_EQ(rgb.sample_shape(), (Shape{5, 4, 3}));
  EXPECT_EQ(rgb.pixels.size(), size_t{3 * 5 * 4 * 3});
  EXPECT_EQ(rgb.labels.size(), size_t{3});
  const ImageSet gray = synthetic_images(3, 5, 4, 10, 7);
  EXPECT_EQ(gray.sample_shape(), (Shape{5, 4, 1}));
  // The labels are drawn apart from the pixels: the same whatever the channel count.
  EXPECT_EQ(gray.labels, rgb.labels);
  EXPECT_THROW(synthetic_images(1, 2, 2, 10, 7, 0), InvalidArgument);
}

}  // namespace
}  // namespace mirror::data
