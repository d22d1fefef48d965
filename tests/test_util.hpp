// Helpers shared by the test suites: synthetic data sets, tolerance checks, and environment
// variables set for one test.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include "mirror/engine/data/dataset.hpp"

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

// Sets (or, with nullopt, unsets) an environment variable until the end of the scope, then puts
// back what was there. Only for single-threaded stretches of a test: setenv is not thread-safe.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) saved_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (saved_) {
      setenv(name_, saved_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> saved_;
};

// The message of the exception of type E that fn() throws (a test failure if it throws none).
template <typename E>
std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception of the expected type";
  return "";
}

// Runs fn(rank) on `size` threads; returns one exception message per rank ("" when none).
template <typename Fn>
std::vector<std::string> on_ranks(int size, Fn fn) {
  std::vector<std::string> errors(static_cast<size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace mirror::testing
