// What the saving suites share: a directory of its own per test, the small CNN they save and
// load, and distinct weights to set on it.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "mirror/mirror.hpp"

namespace mirror::testing {

// A directory of its own per test, removed afterwards.
class SavingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A parameterized test's name holds a '/': one directory, not a nested pair.
    std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(test.begin(), test.end(), '/', '_');
    dir_ = std::filesystem::temp_directory_path() / ("mirror_saving_" + std::to_string(::getpid()) + "_" + test);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  HostStrategy strategy_{1, 1};
  std::filesystem::path dir_;
};

inline std::unique_ptr<Model> cnn(int64_t filters = 4) {
  return std::make_unique<Sequential>(std::vector<LayerPtr>{
      layers::Conv2D(filters, {3, 3}, Activation::ReLU, Shape{8, 8, 1}), layers::MaxPooling2D({2, 2}), layers::Flatten(),
      layers::Dense(3, Activation::Softmax)});
}

inline std::vector<float> ramp(size_t n) {
  std::vector<float> w(n);
  for (size_t i = 0; i < n; ++i) w[i] = 0.5f + 0.001f * static_cast<float>(i % 997);
  return w;
}

}  // namespace mirror::testing
