// fit's end-of-fit report (History::report, printed at verbose >= 1): every replica's step time
// split into compute, all-reduce and waiting for the slowest replica, shares that add up to 1.
#include <gtest/gtest.h>

#include <sstream>

#include "mirror/mirror.hpp"

namespace mirror {
namespace {

class FitReportTest : public ::testing::TestWithParam<int> {};

TEST_P(FitReportTest, SharesOfEveryReplicaAddUp) {
  constexpr int64_t kSteps = 10, kBatch = 32;
  const int replicas = GetParam();
  const ImageSet data = data::synthetic_images(kSteps * kBatch);
  HostStrategy strategy(replicas);
  Sequential model({layers::Conv2D(8, {3, 3}, Activation::ReLU, data.sample_shape()), layers::MaxPooling2D({2, 2}),
                    layers::Flatten(), layers::Dense(10, Activation::Softmax)});
  model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 42);
  std::ostringstream out;
  const History history = model.fit(data, {.epochs = 2, .batch_size = kBatch, .verbose = 2, .out = &out});

  const FitReport& report = history.report;
  EXPECT_EQ(report.steps, 2 * kSteps);
  EXPECT_GT(report.step_seconds, 0.0);
  EXPECT_GT(report.samples_per_second, 0.0);
  EXPECT_EQ(report.all_reduce_hidden, 0.0);  // the host's collectives run in the replica's thread
  ASSERT_EQ(report.replicas.size(), static_cast<size_t>(replicas));
  for (int r = 0; r < replicas; ++r) {
    const ReplicaTimeShares& s = report.replicas[static_cast<size_t>(r)];
    EXPECT_EQ(s.replica, r);
    EXPECT_EQ(s.device, strategy.device(r).name());
    for (const double share : {s.compute, s.all_reduce, s.waiting}) {
      EXPECT_GE(share, 0.0);
      EXPECT_LE(share, 1.0);
    }
    EXPECT_NEAR(s.compute + s.all_reduce + s.waiting, 1.0, 1e-9);
    EXPECT_GT(s.compute, 0.0);
    EXPECT_FALSE(s.device_utilisation.has_value());  // NVML figures are for GPUs
    EXPECT_FALSE(s.device_peak_memory_bytes.has_value());
    if (replicas == 1) {
      EXPECT_EQ(s.waiting, 0.0);
    }
  }
  EXPECT_NE(out.str().find("Where the step's time went (20 training steps"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("all-reduce hidden behind backward"), std::string::npos) << out.str();

  std::ostringstream silent;
  model.fit(data, {.batch_size = kBatch, .verbose = 0, .out = &silent});
  EXPECT_EQ(silent.str(), "");
}

INSTANTIATE_TEST_SUITE_P(Replicas, FitReportTest, ::testing::Values(1, 2),
                         [](const auto& info) { return std::to_string(info.param) + "_replicas"; });

}  // namespace
}  // namespace mirror
