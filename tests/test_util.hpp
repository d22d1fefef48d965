// Helpers shared by the test suites: synthetic data sets and tolerance checks.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/data/dataset.hpp"

namespace mirror::testing {

using data::synthetic_images;

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
