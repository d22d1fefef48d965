// Helpers shared by the test suites: synthetic data sets and tolerance checks.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/data/dataset.hpp"
#include "engine/random.hpp"

namespace mirror::testing {

// `count` random images of h x w x 1 with labels in [0, classes); pixel values depend on the label
// so that a model can learn something.
inline ImageSet synthetic_images(int64_t count, int64_t h, int64_t w, int32_t classes, uint64_t seed = 7) {
  ImageSet set;
  set.count = count;
  set.height = h;
  set.width = w;
  set.channels = 1;
  set.pixels.resize(static_cast<size_t>(count * h * w));
  set.labels.resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const auto label = static_cast<int32_t>(random::below(seed, 1, static_cast<uint64_t>(i), static_cast<uint64_t>(classes)));
    set.labels[static_cast<size_t>(i)] = label;
    for (int64_t p = 0; p < h * w; ++p) {
      const float noise = random::uniform(seed, 2, static_cast<uint64_t>(i * h * w + p));
      const bool lit = (p % classes) == label;
      set.pixels[static_cast<size_t>(i * h * w + p)] = static_cast<uint8_t>((lit ? 128.0f : 0.0f) + 127.0f * noise);
    }
  }
  return set;
}

// |a - b| <= atol + rtol * |b| element-wise; reports the first mismatches.
inline ::testing::AssertionResult all_close(const std::vector<float>& a, const std::vector<float>& b, double rtol,
                                            double atol) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  int shown = 0;
  size_t bad = 0;
  ::testing::AssertionResult failure = ::testing::AssertionFailure();
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::fabs(double(a[i]) - double(b[i]));
    if (!(diff <= atol + rtol * std::fabs(double(b[i])))) {
      ++bad;
      if (shown++ < 5) failure << "[" << i << "] " << a[i] << " vs " << b[i] << " (diff " << diff << "); ";
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return failure << bad << " of " << a.size() << " elements differ";
}

}  // namespace mirror::testing
