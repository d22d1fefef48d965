// Sequential: building, summary, weights, prediction, and every bad input a user can give it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <future>
#include <limits>
#include <sstream>
#include <thread>

#include "mirror/mirror.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using testing::message_of;
using testing::synthetic_images;

std::unique_ptr<Sequential> reference_cnn(int64_t classes = 10) {
  return std::make_unique<Sequential>(std::vector<LayerPtr>{
      layers::Conv2D(32, {3, 3}, Activation::ReLU, Shape{28, 28, 1}), layers::MaxPooling2D({2, 2}), layers::Flatten(),
      layers::Dense(classes, Activation::Softmax)});
}

TEST(Model, ReferenceSummaryMatchesKeras) {
  HostStrategy strategy(1, 1);
  auto model = reference_cnn();
  model->compile(strategy, optimizers::Adam());
  EXPECT_EQ(model->count_params(), 54410);
  std::ostringstream out;
  model->summary(out);
  const std::string s = out.str();
  for (const char* piece : {"conv2d (Conv2D)", "(None, 26, 26, 32)", "max_pooling2d (MaxPooling2D)", "(None, 13, 13, 32)",
                            "flatten (Flatten)", "(None, 5408)", "dense (Dense)", "(None, 10)", "54,090",
                            "Total params: 54,410 (212.54 KB)"})
    EXPECT_NE(s.find(piece), std::string::npos) << piece << " missing from\n" << s;
}

TEST(Model, WeightsFollowKerasOrderAndInitializers) {
  HostStrategy strategy(2, 1);
  auto model = reference_cnn();
  model->compile(strategy, optimizers::Adam(), {}, {}, 1);
  const auto w = model->get_weights();
  ASSERT_EQ(w.size(), 54410u);
  const double conv_limit = std::sqrt(6.0 / (9 + 9 * 32)), dense_limit = std::sqrt(6.0 / (5408 + 10));
  double conv_max = 0;
  for (size_t i = 0; i < 288; ++i) conv_max = std::max(conv_max, std::fabs(double(w[i])));
  EXPECT_LE(conv_max, conv_limit);
  EXPECT_GT(conv_max, 0.8 * conv_limit);  // uniform over the whole range
  for (size_t i = 288; i < 320; ++i) EXPECT_EQ(w[i], 0.0f);  // conv bias
  for (size_t i = 320; i < 320 + 54080; ++i) ASSERT_LE(std::fabs(double(w[i])), dense_limit);
  for (size_t i = 320 + 54080; i < w.size(); ++i) EXPECT_EQ(w[i], 0.0f);  // dense bias

  std::vector<float> changed(w.size());
  for (size_t i = 0; i < changed.size(); ++i) changed[i] = float(i % 13) * 0.01f;
  model->set_weights(changed);
  EXPECT_EQ(model->get_weights(1), changed);
  EXPECT_THROW(model->set_weights(std::vector<float>(10)), InvalidArgument);
}

TEST(Model, PredictGivesProbabilitiesAndEvaluateAgreesWithIt) {
  HostStrategy strategy(3, 1);
  Sequential model({layers::Conv2D(4, {3, 3}, Activation::ReLU), layers::MaxPooling2D(), layers::Flatten(),
                    layers::Dense(5, Activation::Softmax)});
  // Keras reports only the metrics a model was compiled with.
  model.compile(strategy, optimizers::Adam(), {}, {metrics::Accuracy()});
  const ImageSet data = synthetic_images(50, 8, 8, 5);
  model.fit(data, {.epochs = 2, .batch_size = 8, .verbose = 0});  // built from the data: (8, 8, 1)
  EXPECT_EQ(model.input_shape(), (Shape{8, 8, 1}));
  const auto probs = model.predict(data, 7);
  ASSERT_EQ(probs.size(), 250u);
  int correct = 0;
  for (int i = 0; i < 50; ++i) {
    float sum = 0;
    int best = 0;
    for (int j = 0; j < 5; ++j) {
      sum += probs[size_t(i * 5 + j)];
      if (probs[size_t(i * 5 + j)] > probs[size_t(i * 5 + best)]) best = j;
    }
    EXPECT_NEAR(sum, 1.0f, 1e-5);
    correct += best == data.labels[size_t(i)];
  }
  const auto result = model.evaluate(data, {.batch_size = 9, .verbose = 0});
  EXPECT_NEAR(result.accuracy, correct / 50.0, 1e-12);
}

TEST(ModelErrors, BatchSizeMustBePositive) {
  HostStrategy strategy(1, 1);
  auto model = reference_cnn();
  model->compile(strategy, optimizers::Adam());
  const ImageSet data = synthetic_images(10, 28, 28, 10);
  for (int64_t bad : {0, -4}) {
    const auto m = message_of<InvalidArgument>([&] { model->fit(data, {.batch_size = bad, .verbose = 0}); });
    EXPECT_NE(m.find("batch_size"), std::string::npos) << m;
  }
  EXPECT_THROW(model->evaluate(data, {.batch_size = 0, .verbose = 0}), InvalidArgument);
  EXPECT_THROW(model->predict(data, -1), InvalidArgument);
  EXPECT_THROW(model->fit(data, {.epochs = -1, .verbose = 0}), InvalidArgument);
}

TEST(ModelErrors, LabelOutOfRangeNamesLabelIndexAndClasses) {
  HostStrategy strategy(2, 1);
  auto model = reference_cnn(10);
  model->compile(strategy, optimizers::Adam());
  ImageSet data = synthetic_images(40, 28, 28, 10);
  data.labels[31] = 12;
  const auto m = message_of<DataError>([&] { model->fit(data, {.verbose = 0}); });
  EXPECT_NE(m.find("label 12"), std::string::npos) << m;
  EXPECT_NE(m.find("index 31"), std::string::npos) << m;
  EXPECT_NE(m.find("10"), std::string::npos) << m;
}

TEST(ModelErrors, WrongImageShapeAndUncompiledModel) {
  HostStrategy strategy(1, 1);
  auto model = reference_cnn();
  EXPECT_THROW(model->fit(synthetic_images(4, 28, 28, 10), {.verbose = 0}), InvalidArgument);  // not compiled
  model->compile(strategy, optimizers::Adam());
  const auto m = message_of<DataError>([&] { model->fit(synthetic_images(4, 20, 20, 10), {.verbose = 0}); });
  EXPECT_NE(m.find("(28, 28, 1)"), std::string::npos) << m;
  EXPECT_THROW(model->fit(ImageSet{}, {.verbose = 0}), DataError);
}

TEST(ModelErrors, NanLossStopsFitAndKeepsTheLastGoodWeights) {
  HostStrategy strategy(2, 1);
  auto model = reference_cnn();
  model->compile(strategy, optimizers::Adam());
  const ImageSet data = synthetic_images(64, 28, 28, 10);
  model->fit(data, {.epochs = 1, .batch_size = 32, .verbose = 0, .steps_per_epoch = 1});
  auto weights = model->get_weights();
  weights[54410 - 1] = std::numeric_limits<float>::quiet_NaN();  // a dense bias: every sample's loss is NaN
  model->set_weights(weights);
  const auto m = message_of<NumericalError>([&] { model->fit(data, {.epochs = 1, .batch_size = 32, .verbose = 0}); });
  EXPECT_NE(m.find("epoch 1, step 1/2"), std::string::npos) << m;
  const auto after = model->get_weights();
  EXPECT_EQ(std::memcmp(after.data(), weights.data(), after.size() * sizeof(float)), 0);  // nothing applied
  EXPECT_TRUE(model->replicas_identical());
}

TEST(ModelErrors, LayersThatDoNotFitTheInput) {
  HostStrategy strategy(1, 1);
  Sequential too_small({layers::Conv2D(4, {5, 5}, Activation::ReLU, Shape{3, 3, 1}), layers::Flatten(), layers::Dense(2)});
  EXPECT_THROW(too_small.compile(strategy, optimizers::Adam()), InvalidArgument);
  Sequential no_flatten({layers::Conv2D(4, {3, 3}, Activation::ReLU, Shape{8, 8, 1}), layers::Dense(2)});
  EXPECT_THROW(no_flatten.compile(strategy, optimizers::Adam()), InvalidArgument);
  EXPECT_THROW(layers::Dense(0), InvalidArgument);
  EXPECT_THROW(optimizers::Adam({.learning_rate = -1}), InvalidArgument);
}

std::string summary_of(const Model& model) {
  std::ostringstream out;
  model.summary(out);
  return out.str();
}

TEST(Model, CountParamsAndSummaryAgreeBeforeAndAfterCompile) {
  HostStrategy strategy(1, 1);
  auto declared = reference_cnn();  // a Sequential is built at compile (or Sequential::build)
  EXPECT_EQ(declared->count_params(), 0);
  EXPECT_NE(summary_of(*declared).find("Total params: 0 ("), std::string::npos) << summary_of(*declared);
  declared->build(Shape{28, 28, 1});
  EXPECT_EQ(declared->count_params(), 54410);
  EXPECT_NE(summary_of(*declared).find("Total params: 54,410 ("), std::string::npos) << summary_of(*declared);
  declared->compile(strategy, optimizers::Adam());
  EXPECT_EQ(declared->count_params(), 54410);
  EXPECT_NE(summary_of(*declared).find("Total params: 54,410 ("), std::string::npos) << summary_of(*declared);

  const Tensor x = Input(Shape{28, 28, 1});  // a functional model is built by its layer calls
  const Tensor y = layers::Dense(10, Activation::Softmax)(
      layers::Flatten()(layers::MaxPooling2D({2, 2})(layers::Conv2D(32, {3, 3}, Activation::ReLU)(x))));
  Model functional(x, y);
  EXPECT_EQ(functional.count_params(), 54410);
  EXPECT_NE(summary_of(functional).find("Total params: 54,410 ("), std::string::npos) << summary_of(functional);
}

TEST(Model, CompilingAgainKeepsTheWeightsAndRestartsTheOptimizer) {
  HostStrategy one(1, 1), two(2, 1);
  auto model = reference_cnn();
  model->compile(one, optimizers::Adam(), {}, {}, 3);
  const ImageSet data = synthetic_images(32, 28, 28, 10);
  model->fit(data, {.epochs = 1, .batch_size = 16, .verbose = 0});
  const auto trained = model->get_weights();
  model->compile(two, optimizers::SGD(), {}, {}, 4);  // another optimizer, strategy and seed
  EXPECT_EQ(model->get_weights(0), trained);
  EXPECT_EQ(model->get_weights(1), trained);
  EXPECT_EQ(model->iterations(), 0);
  auto fresh = reference_cnn();  // how to start over: a new model
  fresh->compile(two, optimizers::SGD(), {}, {}, 3);
  EXPECT_NE(fresh->get_weights(), trained);
}

TEST(Model, PredictTakesImagesWithoutLabels) {
  HostStrategy strategy(2, 1);
  auto model = reference_cnn();
  model->compile(strategy, optimizers::Adam());
  const ImageSet labelled = synthetic_images(9, 28, 28, 10);
  ImageSet unlabelled = labelled;
  unlabelled.labels.clear();
  EXPECT_EQ(model->predict(unlabelled, 4), model->predict(labelled, 4));
  const auto m = message_of<DataError>([&] { model->evaluate(unlabelled, {.verbose = 0}); });
  EXPECT_NE(m.find("0 labels"), std::string::npos) << m;  // evaluate and fit still need them
  unlabelled.labels.assign(3, 0);
  EXPECT_THROW(model->predict(unlabelled), DataError);  // labels that do not match the images
}

TEST(ModelErrors, VerboseOutsideZeroToTwo) {
  HostStrategy strategy(1, 1);
  auto model = reference_cnn();
  model->compile(strategy, optimizers::Adam());
  const ImageSet data = synthetic_images(4, 28, 28, 10);
  for (int bad : {-1, 3, 7}) {
    const auto m = message_of<InvalidArgument>([&] { model->fit(data, {.verbose = bad}); });
    EXPECT_NE(m.find("verbose must be 0"), std::string::npos) << m;
    EXPECT_NE(m.find(std::to_string(bad)), std::string::npos) << m;
    EXPECT_THROW(model->evaluate(data, {.verbose = bad}), InvalidArgument);
  }
  EXPECT_EQ(model->iterations(), 0);  // refused before any step
}

TEST(ModelErrors, AModelWhoseStrategyIsGoneRefusesInsteadOfHanging) {
  auto model = reference_cnn();
  const ImageSet data = synthetic_images(8, 28, 28, 10);
  {
    HostStrategy gone(2, 1);
    model->compile(gone, optimizers::Adam());
  }
  const std::vector<std::function<void()>> calls = {
      [&] { model->predict(data); }, [&] { model->evaluate(data, {.verbose = 0}); },
      [&] { model->fit(data, {.verbose = 0}); }, [&] { model->get_weights(); },
      [&] { model->set_weights(std::vector<float>(54410)); }, [&] { model->replicas_identical(); }};
  for (const auto& call : calls) {
    const auto m = message_of<InvalidArgument>(call);
    EXPECT_NE(m.find("strategy this model was compiled with was destroyed"), std::string::npos) << m;
    EXPECT_NE(m.find("compile it again with a live one"), std::string::npos) << m;
  }
  HostStrategy live(1, 1);
  model->compile(live, optimizers::Adam());
  EXPECT_EQ(model->predict(data).size(), 80u);

  auto orphan = reference_cnn();  // destroyed after its strategy: must not touch it
  {
    HostStrategy gone(1, 1);
    orphan->compile(gone, optimizers::Adam());
  }
  orphan.reset();
}

// Two models compiled with one strategy.
struct SharedStrategy : ::testing::Test {
  HostStrategy strategy{2, 1};
  std::unique_ptr<Sequential> a = reference_cnn(), b = reference_cnn();
  const ImageSet data = synthetic_images(16, 28, 28, 10);
  void SetUp() override {
    a->compile(strategy, optimizers::Adam());
    b->compile(strategy, optimizers::Adam());
  }
};

// Holds a fit inside on_train_begin until `proceed` is set.
struct HoldFit : Callback {
  std::promise<void> started;
  std::shared_future<void> proceed;
  void on_train_begin() override {
    started.set_value();
    proceed.wait();
  }
};

TEST_F(SharedStrategy, ASecondThreadIsRefused) {
  auto hold = std::make_shared<HoldFit>();
  std::promise<void> proceed;
  hold->proceed = proceed.get_future().share();
  auto started = hold->started.get_future();
  std::thread fitting([&] { a->fit(data, {.epochs = 1, .batch_size = 8, .verbose = 0, .callbacks = {hold}}); });
  started.wait();
  std::string refused[3];
  std::thread other([&] {
    refused[0] = message_of<InvalidArgument>([&] { b->predict(data); });
    refused[1] = message_of<InvalidArgument>([&] { b->evaluate(data, {.verbose = 0}); });
    refused[2] = message_of<InvalidArgument>([&] { b->fit(data, {.verbose = 0}); });
  });
  other.join();
  proceed.set_value();
  fitting.join();
  for (const std::string& m : refused) {
    EXPECT_NE(m.find("host strategy"), std::string::npos) << m;
    EXPECT_NE(m.find("another thread's fit() is running"), std::string::npos) << m;
  }
  EXPECT_EQ(a->iterations(), 2);
  EXPECT_EQ(b->predict(data).size(), 160u);  // free again once the fit returned
}

TEST_F(SharedStrategy, TheThreadThatHoldsItMayUseItAgain) {
  struct PredictOther : Callback {
    Model* other = nullptr;
    const ImageSet* data = nullptr;
    size_t outputs = 0;
    void on_epoch_end(int, EpochLog&) override { outputs = other->predict(*data).size(); }
  };
  auto callback = std::make_shared<PredictOther>();
  callback->other = b.get();
  callback->data = &data;
  a->fit(data, {.epochs = 1, .batch_size = 8, .verbose = 0, .callbacks = {callback}});
  EXPECT_EQ(callback->outputs, 160u);
}

}  // namespace
}  // namespace mirror
