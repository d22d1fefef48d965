// NaN propagates through the host's ops (tests/nan_cases.hpp: every activation, the convolutions
// alone, with ReLU and fused with max pooling, the poolings, dense, batch normalization) under
// every variant of the host loops this CPU runs, and through a whole model: a NaN in a
// convolution's kernel followed by ReLU and max pooling (the fused path) reaches the predictions,
// evaluate refuses the NaN loss, fit's NaN policy fires on it, and TerminateOnNaN stops the fit.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "isa_test_util.hpp"
#include "mirror/mirror.hpp"
#include "nan_cases.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using namespace mirror::testing;

TEST(Nan, PropagatesThroughEveryHostOp) {
  auto backend = make_host_backend(2);
  backend->bind_current_thread();
  for_each_runnable_isa([&](host::CpuIsa) { expect_nan_propagates(*backend); });
}

std::unique_ptr<Model> conv_relu_pool_model() {
  return std::make_unique<Sequential>(std::vector<LayerPtr>{
      layers::Conv2D(8, {3, 3}, Activation::ReLU, Shape{6, 6, 3}), layers::MaxPooling2D({2, 2}), layers::Flatten(),
      layers::Dense(4, Activation::Softmax)});
}

// The model's weights with one element of the convolution's kernel NaN.
std::vector<float> with_nan_kernel(Model& model) {
  std::vector<float> weights = model.get_weights();
  const std::vector<VariableInfo> vars = model.variables();
  EXPECT_EQ(vars.at(0).path, "conv2d/kernel");
  weights.at(7) = NAN;  // kernel (3, 3, 3, 8): position (0, 0), channel 0, filter 7
  return weights;
}

TEST(Nan, AKernelNaNReachesPredictionsAndStopsFit) {
  const ImageSet data = synthetic_images(32, 6, 6, 4, 7, 3);
  HostStrategy strategy(2, 1);
  auto model = conv_relu_pool_model();
  model->compile(strategy, optimizers::SGD(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()});
  model->fit(data, {.epochs = 1, .batch_size = 8, .verbose = 0});
  model->set_weights(with_nan_kernel(*model));

  const std::vector<float> predictions = model->predict(data, 8);
  ASSERT_EQ(predictions.size(), 32u * 4u);
  for (size_t i = 0; i < predictions.size(); ++i) ASSERT_TRUE(std::isnan(predictions[i])) << "prediction " << i;
  EXPECT_THROW(model->evaluate(data, {.batch_size = 8, .verbose = 0}), NumericalError);

  EXPECT_THROW(model->fit(data, {.epochs = 2, .batch_size = 8, .verbose = 0}), NumericalError);
  model->set_weights(with_nan_kernel(*model));
  std::ostringstream out;
  const History h = model->fit(data, {.epochs = 2, .batch_size = 8, .verbose = 0, .out = &out,
                                      .callbacks = {callbacks::TerminateOnNaN()}});
  ASSERT_EQ(h.epochs.size(), 1u);
  EXPECT_FALSE(std::isfinite(h.epochs[0].loss));
  EXPECT_NE(out.str().find("Invalid loss, terminating training"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace mirror
