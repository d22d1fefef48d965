// The host backend's loss and metric ops: per-sample values against Keras 3's, computed by NumPy
// (tests/reference/keras_semantics.inc), every loss configuration's gradient against central
// finite differences of a double-precision reference written here, the metrics, and the errors a
// user gets for labels or specs that cannot work.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <span>

#include "mirror/engine/error.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "op_test_util.hpp"
#include "reference/keras_semantics.inc"

namespace mirror {
namespace {

using namespace mirror::testing;
namespace kr = mirror::keras_reference;

class Losses : public HostBackendTest {
 protected:
  Losses() : HostBackendTest(99) {}

  // Each row's loss on its own (rows = 1), and the sum over all rows in one call.
  void expect_per_sample(const char* what, const LossSpec& spec, int64_t rows, int64_t cols, const float* outputs,
                         const int32_t* labels, std::span<const double> expected) {
    SCOPED_TRACE(what);
    Floats each(rows, kNaN);
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) {
      float stat = 0.0f;
      backend_->loss(spec, 1, cols, outputs + r * cols, labels + r, 1.0f, nullptr, &stat);
      each[r] = stat;
      sum += expected[r];
    }
    expect_close("per-sample loss", each, expected, 1e-6, 2e-6);
    float total = 0.5f;  // the op adds to what is there
    backend_->loss(spec, rows, cols, outputs, labels, 1.0f, nullptr, &total);
    const Doubles total_ref = {0.5 + sum};
    expect_close("summed loss", std::span<const float>(&total, 1), total_ref, 1e-6, 2e-6);
  }

};

TEST_F(Losses, CategoricalCrossentropyMatchesKeras) {
  for (const float smoothing : {0.0f, 0.1f}) {
    SCOPED_TRACE(::testing::Message() << "label_smoothing " << smoothing);
    const bool smooth = smoothing > 0;
    const LossSpec probabilities{.kind = LossKind::CategoricalCrossentropy, .label_smoothing = smoothing};
    LossSpec logits = probabilities;
    logits.from_logits = true;
    expect_per_sample("probabilities", probabilities, kr::kCceRows, kr::kCceClasses, kr::kCceProbabilities,
                      kr::kCceLabels, smooth ? kr::kCceProbabilityLoss1 : kr::kCceProbabilityLoss0);
    expect_per_sample("logits", logits, kr::kCceRows, kr::kCceClasses, kr::kCceLogits, kr::kCceLabels,
                      smooth ? kr::kCceLogitLoss1 : kr::kCceLogitLoss0);
  }
}

TEST_F(Losses, BinaryCrossentropyMatchesKeras) {
  for (const float smoothing : {0.0f, 0.2f}) {
    SCOPED_TRACE(::testing::Message() << "label_smoothing " << smoothing);
    const bool smooth = smoothing > 0;
    const LossSpec probabilities{.kind = LossKind::BinaryCrossentropy, .label_smoothing = smoothing};
    LossSpec logits = probabilities;
    logits.from_logits = true;
    expect_per_sample("one column, probabilities", probabilities, 6, 1, kr::kBceProbabilities1, kr::kBceLabels1,
                      smooth ? kr::kBceProbabilityLoss1_2 : kr::kBceProbabilityLoss1_0);
    expect_per_sample("one column, logits", logits, 6, 1, kr::kBceLogits1, kr::kBceLabels1,
                      smooth ? kr::kBceLogitLoss1_2 : kr::kBceLogitLoss1_0);
    expect_per_sample("three columns, probabilities", probabilities, 4, 3, kr::kBceProbabilities3, kr::kBceLabels3,
                      smooth ? kr::kBceProbabilityLoss3_2 : kr::kBceProbabilityLoss3_0);
    expect_per_sample("three columns, logits", logits, 4, 3, kr::kBceLogits3, kr::kBceLabels3,
                      smooth ? kr::kBceLogitLoss3_2 : kr::kBceLogitLoss3_0);
  }
}

TEST_F(Losses, MeanSquaredErrorMatchesKeras) {
  const LossSpec mse{.kind = LossKind::MeanSquaredError};
  expect_per_sample("one column", mse, 4, 1, kr::kMseOutputs1, kr::kMseLabels1, kr::kMseLoss1);
  expect_per_sample("four columns", mse, 3, 4, kr::kMseOutputs4, kr::kMseLabels4, kr::kMseLoss4);
}

TEST_F(Losses, SparseTopKAccuracyMatchesKeras) {
  const std::span<const double> expected[] = {kr::kTopKAccuracy1, kr::kTopKAccuracy2, kr::kTopKAccuracy3};
  for (int k = 1; k <= 3; ++k) {
    SCOPED_TRACE(::testing::Message() << "k = " << k);
    Floats each(6, kNaN);
    for (int64_t r = 0; r < 6; ++r) {
      each[r] = 0.0f;
      backend_->metric({.kind = MetricKind::SparseTopKCategoricalAccuracy, .k = k}, 1, 5, kr::kTopKOutputs + r * 5,
                       kr::kTopKLabels + r, &each[r]);
    }
    expect_close("top-k hits", each, expected[k - 1], 0.0, 0.0);
  }
}

TEST_F(Losses, AccuraciesCountLikeKeras) {
  // Categorical kinds: the first maximum is the prediction (row 1 ties, and its label is not first).
  const Floats y = {0.1f, 0.7f, 0.2f, 0.4f, 0.4f, 0.2f, 0.3f, 0.3f, 0.4f};
  const int32_t labels[] = {1, 1, 2};
  for (MetricKind kind : {MetricKind::SparseCategoricalAccuracy, MetricKind::CategoricalAccuracy}) {
    float correct = 1.0f;
    backend_->metric({.kind = kind}, 3, 3, y.data(), labels, &correct);
    EXPECT_EQ(correct, 3.0f);  // 1 + rows 0 and 2
  }
  // Binary: one column compares (y > threshold) with the label; several columns give the share of
  // columns that match the one-hot target.
  const Floats p1 = {0.2f, 0.7f, 0.5f, 0.9f};
  const int32_t labels1[] = {0, 0, 0, 1};
  float hits = 0.0f;
  backend_->metric({.kind = MetricKind::BinaryAccuracy}, 4, 1, p1.data(), labels1, &hits);
  EXPECT_EQ(hits, 3.0f);  // 0.5 is not above 0.5
  hits = 0.0f;
  backend_->metric({.kind = MetricKind::BinaryAccuracy, .threshold = 0.1f}, 4, 1, p1.data(), labels1, &hits);
  EXPECT_EQ(hits, 1.0f);
  const Floats p3 = {0.9f, 0.2f, 0.6f, 0.1f, 0.1f, 0.1f};
  const int32_t labels3[] = {0, 2};
  hits = 0.0f;
  backend_->metric({.kind = MetricKind::BinaryAccuracy}, 2, 3, p3.data(), labels3, &hits);
  EXPECT_FLOAT_EQ(hits, 2.0f / 3.0f + 2.0f / 3.0f);
}

TEST_F(Losses, LabelsAndSpecsThatCannotWorkAreRefused) {
  const Floats y(8, 0.5f);
  float stat = 0.0f;
  const int32_t too_large[] = {0, 4}, two[] = {2}, negative[] = {-1};
  EXPECT_THROW(backend_->loss({}, 2, 4, y.data(), too_large, 1.0f, nullptr, &stat), DataError);
  EXPECT_THROW(backend_->loss({.kind = LossKind::CategoricalCrossentropy}, 1, 4, y.data(), negative, 1.0f, nullptr,
                              &stat),
               DataError);
  EXPECT_THROW(backend_->loss({.kind = LossKind::BinaryCrossentropy}, 1, 1, y.data(), two, 1.0f, nullptr, &stat),
               DataError);
  EXPECT_NO_THROW(backend_->loss({.kind = LossKind::MeanSquaredError}, 1, 1, y.data(), two, 1.0f, nullptr, &stat));
  EXPECT_THROW(backend_->loss({.from_logits = true, .gradient_through_activation = true}, 1, 4, y.data(), two, 1.0f,
                              nullptr, &stat),
               InvalidArgument);
  EXPECT_THROW(backend_->loss({.kind = LossKind::MeanSquaredError, .gradient_through_activation = true}, 1, 4,
                              y.data(), two, 1.0f, nullptr, &stat),
               InvalidArgument);
  EXPECT_THROW(backend_->loss({.label_smoothing = 0.1f}, 1, 4, y.data(), two, 1.0f, nullptr, &stat), InvalidArgument);
  EXPECT_THROW(backend_->loss({.kind = LossKind::CategoricalCrossentropy, .label_smoothing = 1.5f}, 1, 4, y.data(),
                              two, 1.0f, nullptr, &stat),
               InvalidArgument);
  try {
    backend_->loss({}, 2, 4, y.data(), too_large, 1.0f, nullptr, &stat);
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("label 4 at batch row 1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mirror
