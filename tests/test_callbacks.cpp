// fit()'s callbacks, validation and History: early stopping that restores the best weights on every
// replica, a CSV log that keeps its rows when training fails later, TerminateOnNaN against the
// default error, the learning-rate callbacks, validation_split / validation_freq, and the hooks'
// order and counts. Values that decide a callback are injected through a LambdaCallback, so the
// expected decisions follow from Keras 3's rules by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mirror/mirror.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using testing::synthetic_images;

std::unique_ptr<Sequential> small_model() {
  return std::make_unique<Sequential>(std::vector<LayerPtr>{
      layers::Conv2D(2, {3, 3}, Activation::ReLU, Shape{6, 6, 1}), layers::Flatten(), layers::Dense(3, Activation::Softmax)});
}

// A callback that puts `values[epoch]` into the log as `name` (before the callbacks after it run).
CallbackPtr inject(const std::string& name, std::vector<double> values) {
  return callbacks::LambdaCallback({.on_epoch_end = [=](int epoch, EpochLog& log) {
    log.set(name, values[static_cast<size_t>(epoch)]);
  }});
}

ImageSet tail(const ImageSet& data, int64_t from) {
  ImageSet t = data;
  t.count = data.count - from;
  t.pixels.erase(t.pixels.begin(), t.pixels.begin() + from * data.sample_size());
  t.labels.erase(t.labels.begin(), t.labels.begin() + from);
  return t;
}

std::vector<std::string> lines_of(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(Callbacks, EarlyStoppingRestoresTheBestWeightsOnEveryReplica) {
  const ImageSet data = synthetic_images(60, 6, 6, 3);
  HostStrategy strategy(3, 1);
  auto model = small_model();
  model->compile(strategy, optimizers::SGD({.learning_rate = 0.1f}), {}, {metrics::Accuracy()}, 1);
  std::vector<std::vector<std::vector<float>>> weights;  // per epoch, per replica
  auto record = callbacks::LambdaCallback({.on_epoch_end = [&](int, EpochLog&) {
    weights.emplace_back();
    for (int r = 0; r < 3; ++r) weights.back().push_back(model->get_weights(r));
  }});
  // Best at epoch 1 (0-based); no improvement at 2 and 3, so patience 2 stops after epoch 3.
  auto stop = callbacks::EarlyStopping({.monitor = "score", .patience = 2, .restore_best_weights = true});
  const History h = model->fit(data, {.epochs = 10, .batch_size = 20, .verbose = 0,
                                      .callbacks = {record, inject("score", {3, 1, 2, 2.5, 0, 0}), stop}});
  ASSERT_EQ(h.epochs.size(), 4u);
  EXPECT_NE(weights[3][0], weights[1][0]) << "training moved the weights after the best epoch";
  for (int r = 0; r < 3; ++r) EXPECT_EQ(model->get_weights(r), weights[1][0]) << "replica " << r;
  EXPECT_TRUE(model->replicas_identical());
}

TEST(Callbacks, EarlyStoppingMonitorsValLossByDefault) {
  const ImageSet data = synthetic_images(60, 6, 6, 3);
  HostStrategy strategy(1, 1);
  auto model = small_model();
  model->compile(strategy, optimizers::SGD({.learning_rate = 0.1f}));
  // min_delta larger than any change: no epoch after the first improves, so it stops after epoch 1.
  const History h = model->fit(data, {.epochs = 5, .batch_size = 20, .verbose = 0, .validation_split = 0.25,
                                      .callbacks = {callbacks::EarlyStopping({.min_delta = 100.0})}});
  EXPECT_EQ(h.epochs.size(), 2u);
}

TEST(Callbacks, CsvLoggerWritesOneRowPerEpochAndSurvivesAFailure) {
  const auto path = std::filesystem::temp_directory_path() / "mirror_test_callbacks.csv";
  const ImageSet data = synthetic_images(40, 6, 6, 3);
  HostStrategy strategy(2, 1);
  auto model = small_model();
  model->compile(strategy, optimizers::Adam(), {}, {metrics::Accuracy()});
  auto fail = callbacks::LambdaCallback({.on_epoch_begin = [](int epoch) {
    if (epoch == 2) throw Error("injected failure in epoch 3");
  }});
  EXPECT_THROW(model->fit(data, {.epochs = 5, .batch_size = 16, .verbose = 0, .validation_data = &data,
                                 .callbacks = {callbacks::CSVLogger(path.string()), fail}}),
               Error);
  const std::vector<std::string> lines = lines_of(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss");
  EXPECT_EQ(lines[1].rfind("0,", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("1,", 0), 0u) << lines[2];
  // append = true keeps the rows and writes no second header.
  model->fit(data, {.epochs = 1, .batch_size = 16, .verbose = 0, .validation_data = &data,
                    .callbacks = {callbacks::CSVLogger(path.string(), true)}});
  EXPECT_EQ(lines_of(path).size(), 4u);
  std::filesystem::remove(path);
}

TEST(Callbacks, TerminateOnNaNStopsInsteadOfThrowing) {
  const ImageSet data = synthetic_images(64, 6, 6, 3);
  // The rate turns NaN at iteration 2, so the weights, then the loss, become NaN.
  const auto nan_rate = [] {
    return optimizers::SGD({.learning_rate = schedules::Lambda([](int64_t i) { return i == 2 ? NAN : 0.01f; })});
  };
  HostStrategy strategy(2, 1);
  auto model = small_model();
  model->compile(strategy, nan_rate());
  EXPECT_THROW(model->fit(data, {.epochs = 3, .batch_size = 8, .verbose = 0}), NumericalError);
  model->compile(strategy, nan_rate());
  std::ostringstream out;
  const History h = model->fit(data, {.epochs = 3, .batch_size = 8, .verbose = 0, .out = &out,
                                      .callbacks = {callbacks::TerminateOnNaN()}});
  ASSERT_EQ(h.epochs.size(), 1u);
  EXPECT_FALSE(std::isfinite(h.epochs[0].loss));
  EXPECT_NE(out.str().find("Invalid loss, terminating training"), std::string::npos) << out.str();
}

TEST(Callbacks, LearningRateSchedulerAndReduceLROnPlateau) {
  const ImageSet data = synthetic_images(32, 6, 6, 3);
  HostStrategy strategy(1, 1);
  auto model = small_model();
  model->compile(strategy, optimizers::SGD({.learning_rate = 0.1f}));
  const History halved = model->fit(data, {.epochs = 2, .batch_size = 16, .verbose = 0,
                                           .callbacks = {callbacks::LearningRateScheduler(
                                               [](int, float lr) { return lr * 0.5f; })}});
  EXPECT_FLOAT_EQ(halved.epochs[0].get("learning_rate"), 0.05f);
  EXPECT_FLOAT_EQ(halved.epochs[1].get("learning_rate"), 0.025f);

  model->compile(strategy, optimizers::SGD({.learning_rate = 0.1f}));
  // A flat score: patience 1 reduces the rate after every epoch but the first.
  const History h = model->fit(data, {.epochs = 3, .batch_size = 16, .verbose = 0,
                                      .callbacks = {inject("score", {1, 1, 1}),
                                                    callbacks::ReduceLROnPlateau(
                                                        {.monitor = "score", .factor = 0.5, .patience = 1})}});
  EXPECT_FLOAT_EQ(h.epochs[0].get("learning_rate"), 0.1f);
  EXPECT_FLOAT_EQ(h.epochs[1].get("learning_rate"), 0.1f);  // logged before the reduction, as Keras does
  EXPECT_FLOAT_EQ(h.epochs[2].get("learning_rate"), 0.05f);
  EXPECT_FLOAT_EQ(model->optimizer().learning_rate(0), 0.025f);
  // A schedule's rate cannot be set: Keras refuses too.
  model->compile(strategy, optimizers::SGD({.learning_rate = schedules::ExponentialDecay(0.1f, 10, 0.5f)}));
  EXPECT_THROW(model->fit(data, {.epochs = 1, .verbose = 0,
                                 .callbacks = {callbacks::LearningRateScheduler([](int, float lr) { return lr; })}}),
               InvalidArgument);
}

TEST(Callbacks, ValidationSplitAndFrequency) {
  const ImageSet data = synthetic_images(64, 6, 6, 3);
  HostStrategy strategy(2, 1);
  auto model = small_model();
  model->compile(strategy, optimizers::Adam(), {}, {metrics::Accuracy()});
  const History h = model->fit(data, {.epochs = 2, .batch_size = 16, .verbose = 0, .validation_split = 0.25,
                                      .validation_freq = 2});
  EXPECT_FALSE(h.epochs[0].has("val_loss"));
  ASSERT_TRUE(h.epochs[1].has("val_loss") && h.epochs[1].has("val_accuracy"));
  // The held-out rows are the last quarter, taken before shuffling.
  const EvaluateResult held_out = model->evaluate(tail(data, 48), {.batch_size = 16, .verbose = 0});
  EXPECT_NEAR(h.epochs[1].get("val_loss"), held_out.loss, 1e-6);
  EXPECT_NEAR(h.epochs[1].get("val_accuracy"), held_out.accuracy, 1e-6);
  EXPECT_TRUE(h.epochs[1].has("learning_rate"));
  EXPECT_THROW(model->fit(data, {.verbose = 0, .validation_data = &data, .validation_split = 0.25}), InvalidArgument);
  EXPECT_THROW(model->fit(data, {.verbose = 0, .validation_split = 1.0}), InvalidArgument);
  EXPECT_THROW(model->fit(data, {.verbose = 0, .validation_freq = 0}), InvalidArgument);
}

TEST(Callbacks, HooksRunOnceOnTheHostInKerasOrder) {
  const ImageSet data = synthetic_images(40, 6, 6, 3);
  HostStrategy strategy(3, 1);
  auto model = small_model();
  model->compile(strategy, optimizers::Adam());
  std::string order;
  int batch_begins = 0, batch_ends = 0, logs_seen = 0;
  auto hooks = callbacks::LambdaCallback({.on_train_begin = [&] { order += "T"; },
                                          .on_train_end = [&] { order += "t"; },
                                          .on_epoch_begin = [&](int) { order += "E"; },
                                          .on_epoch_end = [&](int, EpochLog&) { order += "e"; },
                                          .on_train_batch_begin = [&](int64_t) { ++batch_begins; },
                                          .on_train_batch_end = [&](int64_t batch, const MetricValues* logs) {
                                            ++batch_ends;
                                            if (logs) ++logs_seen;
                                            if (batch == 2) {
                                              EXPECT_TRUE(logs != nullptr) << "the last batch is read";
                                            }
                                          }});
  model->fit(data, {.epochs = 2, .batch_size = 16, .verbose = 0, .callbacks = {hooks}});
  EXPECT_EQ(order, "TEeEet");
  EXPECT_EQ(batch_begins, 6);  // 3 batches per epoch, once each however many replicas
  EXPECT_EQ(batch_ends, 6);
  EXPECT_GE(logs_seen, 2);
}

}  // namespace
}  // namespace mirror
