// fit's end-of-fit report (History::report, printed at verbose >= 1): every replica's step time
// split into compute, all-reduce and waiting for the slowest replica, shares that add up to 1.
#include <gtest/gtest.h>

#include <sstream>

#include "mirror/mirror.hpp"
#include "mirror/model/fit_report.hpp"

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
  // Nothing measures how much of the all-reduce backward hides, so no figure for it is printed.
  EXPECT_EQ(out.str().find("hidden"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find(" samples/s\n"), std::string::npos) << out.str();

  std::ostringstream silent;
  model.fit(data, {.batch_size = kBatch, .verbose = 0, .out = &silent});
  EXPECT_EQ(silent.str(), "");
}

// A GPU busy less than half the fit is named in words, once per device; a busy one is not.
TEST(FitReport, AMostlyIdleGpuIsSaidInWords) {
  FitReport report;
  report.steps = 10;
  report.step_seconds = 0.01;
  for (int r = 0; r < 3; ++r) {
    ReplicaTimeShares s;
    s.replica = r;
    s.device = r < 2 ? "/physical_device:GPU:0" : "/physical_device:GPU:1";  // two logical replicas on GPU 0
    s.compute = 1;
    s.device_utilisation = r < 2 ? 0.12 : 0.93;
    s.device_peak_memory_bytes = int64_t{3} << 30;
    report.replicas.push_back(s);
  }
  std::ostringstream out;
  print_report(report, out);
  const std::string text = out.str();
  const std::string idle = "/physical_device:GPU:0 was busy 12% of the fit: the input pipeline or the host is the bottleneck";
  EXPECT_NE(text.find(idle), std::string::npos) << text;
  EXPECT_EQ(text.find(idle), text.rfind(idle)) << text;  // once
  EXPECT_EQ(text.find("GPU:1 was busy"), std::string::npos) << text;
  EXPECT_NE(text.find("GPU busy  peak memory"), std::string::npos) << text;
  EXPECT_NE(text.find("3.00 GiB"), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(Replicas, FitReportTest, ::testing::Values(1, 2),
                         [](const auto& info) { return std::to_string(info.param) + "_replicas"; });

}  // namespace
}  // namespace mirror
