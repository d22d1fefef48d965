// The model graph: the functional API, the planner (gradients of a tensor read twice, buffers
// reused, fusions decided by looking at a node and its consumers), variables that are not
// trained, a residual block's gradient against finite differences, and the data-parallel promise
// for synchronized batch normalization and dropout; graphs 100,000 layers deep.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mirror/mirror.hpp"
#include "mirror/model/plan.hpp"
#include "mirror/model/saving/keras_format.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using testing::all_close;
using testing::message_of;
using testing::synthetic_images;

// A residual block as ResNets build it: conv-BN-ReLU-conv-BN, a shortcut (a 1x1 projection when
// the shape changes), add, ReLU.
Tensor residual_block(const Tensor& x, int64_t filters, int64_t stride, bool synchronized, Activation act) {
  using namespace layers;
  const layers::BatchNormalizationOptions bn{.synchronized = synchronized};
  Tensor y = Conv2D(filters, {3, 3}, {.strides = {stride, stride}, .padding = Padding::Same, .use_bias = false,
                                      .kernel_initializer = Initializer::HeNormal})(x);
  y = layers::Activation(act)(BatchNormalization(bn)(y));
  y = Conv2D(filters, {3, 3}, {.padding = Padding::Same, .use_bias = false, .kernel_initializer = Initializer::HeNormal})(y);
  y = BatchNormalization(bn)(y);
  Tensor shortcut = x;
  if (stride != 1 || x.shape()[2] != filters)
    shortcut = BatchNormalization(bn)(Conv2D(filters, {1, 1}, {.strides = {stride, stride}, .use_bias = false})(x));
  return layers::Activation(act)(Add()({shortcut, y}));
}

// ReLU by default; the finite-difference checks use smooth activations, whose loss has no kinks
// for a step of h to cross.
std::unique_ptr<Model> small_resnet(bool synchronized, float dropout = 0.0f, Activation act = Activation::ReLU) {
  const Tensor x = Input(Shape{8, 8, 1});
  Tensor y = layers::Conv2D(4, {3, 3})(layers::ZeroPadding2D(1)(x));  // Keras's "same", spelled out
  y = residual_block(y, 4, 1, synchronized, act);
  y = residual_block(y, 6, 2, synchronized, act == Activation::ReLU ? act : Activation::Tanh);
  y = layers::GlobalAveragePooling2D()(y);
  if (dropout > 0) y = layers::Dropout(dropout)(y);
  return std::make_unique<Model>(x, layers::Dense(5, Activation::Softmax)(y));
}

TEST(Graph, FunctionalResidualModelHasNamedTrainableAndNonTrainableVariables) {
  HostStrategy strategy(1, 1);
  auto model = small_resnet(false);
  model->compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()});
  int64_t trainable = 0, frozen = 0;
  bool saw_moving_mean = false;
  for (const VariableInfo& v : model->variables()) {
    (v.trainable ? trainable : frozen) += v.shape.count();
    if (v.path == "batch_normalization/moving_mean") {
      saw_moving_mean = true;
      EXPECT_FALSE(v.trainable);
    }
  }
  EXPECT_TRUE(saw_moving_mean);
  EXPECT_EQ(model->count_params(), trainable + frozen);
  EXPECT_EQ(model->count_trainable_params(), trainable);
  // Five BN layers of 4, 4, 6, 6, 6 channels: moving mean and variance each.
  EXPECT_EQ(frozen, 2 * (4 + 4 + 6 + 6 + 6));
  EXPECT_EQ(static_cast<int64_t>(model->get_weights().size()), model->count_params());
  std::ostringstream out;
  model->summary(out);
  for (const char* piece : {"Connected to", "input_layer (InputLayer)", "add (Add)", "add_1 (Add)", "(None, 4, 4, 6)",
                            "activation_3 (Activation)"})
    EXPECT_NE(out.str().find(piece), std::string::npos) << piece << " missing from\n" << out.str();
  EXPECT_NE(out.str().find(str(" Non-trainable params: ", frozen, " ")), std::string::npos) << out.str();
}

TEST(Graph, FusionsAreDecidedByLookingAtANodeAndItsConsumers) {
  const Tensor x = Input(Shape{10, 10, 1});
  const Tensor c = layers::Conv2D(4, {3, 3}, Activation::ReLU)(x);
  const Tensor y = layers::Dense(3, Activation::Softmax)(layers::Flatten()(layers::MaxPooling2D()(c)));
  const Plan plan = make_plan(x, y, losses::SparseCategoricalCrossentropy());
  ASSERT_EQ(plan.nodes.size(), 5u);
  EXPECT_TRUE(plan.nodes[1].fusion.activation_done);  // the pooling applies the conv's ReLU derivative
  EXPECT_TRUE(plan.nodes[2].fusion.input_is_relu);
  EXPECT_TRUE(plan.nodes[4].fusion.activation_done);  // the loss takes its gradient through the softmax
  EXPECT_TRUE(plan.loss.gradient_through_activation);
  // With logits the loss does not fuse, and a ReLU read by two nodes keeps its own backward.
  const Plan logits = make_plan(x, y, losses::SparseCategoricalCrossentropy(true));
  EXPECT_FALSE(logits.loss.gradient_through_activation);
  const Tensor x2 = Input(Shape{10, 10, 1});
  const Tensor r = layers::Conv2D(2, {3, 3}, Activation::ReLU)(x2);
  const Tensor joined = layers::Concatenate()({layers::MaxPooling2D()(r), layers::MaxPooling2D()(r)});
  const Plan twice = make_plan(x2, layers::Dense(2, Activation::Softmax)(layers::Flatten()(joined)), Loss());
  EXPECT_FALSE(twice.nodes[1].fusion.activation_done);
}

TEST(Graph, AConvolutionRunsTheMaxPoolingThatAloneReadsItWhereTheBackendFusesThem) {
  const Tensor x = Input(Shape{10, 10, 1});
  const Tensor c = layers::Conv2D(8, {3, 3}, Activation::ReLU)(x);
  const Tensor y = layers::Dense(3, Activation::Softmax)(layers::Flatten()(layers::MaxPooling2D()(c)));
  const auto always = [](const ConvGeometry&, const PoolGeometry&) { return true; };
  const Plan plan = make_plan(x, y, losses::SparseCategoricalCrossentropy(), always);
  ASSERT_EQ(plan.nodes.size(), 5u);
  EXPECT_TRUE(plan.nodes[1].fusion.pools);
  EXPECT_EQ(plan.nodes[1].fusion.pool, (PoolGeometry{0, 8, 8, 8}));
  EXPECT_FALSE(plan.nodes[1].fusion.activation_done);  // the fused op applies ReLU's derivative
  EXPECT_TRUE(plan.nodes[2].fusion.pooled_by_input);
  EXPECT_TRUE(plan.nodes[2].aliases_input);
  EXPECT_FALSE(plan.nodes[2].fusion.input_is_relu);
  // The convolution's output is the pooled tensor (4x4x8 per sample), shared with the pooling.
  EXPECT_EQ(plan.nodes[1].output_floats, 4 * 4 * 8);
  EXPECT_EQ(plan.nodes[2].value_buffer, plan.nodes[1].value_buffer);
  EXPECT_EQ(plan.value_floats[static_cast<size_t>(plan.nodes[1].value_buffer)], 4 * 4 * 8);
  EXPECT_EQ(plan.nodes[2].grad_buffer, plan.nodes[1].grad_buffer);
  for (int64_t floats : plan.grad_floats) EXPECT_LE(floats, 4 * 4 * 8) << "no gradient buffer of the 8x8x8 output";
  // Its scratch holds the argmax: a byte per pooled element.
  EXPECT_GE(plan.nodes[1].scratch_floats_per_row * 4, size_t{4 * 4 * 8});
  // A backend that does not fuse the pair, or a convolution read by two nodes, keeps them apart.
  const auto never = [](const ConvGeometry&, const PoolGeometry&) { return false; };
  const Plan apart = make_plan(x, y, losses::SparseCategoricalCrossentropy(), never);
  EXPECT_FALSE(apart.nodes[1].fusion.pools);
  EXPECT_TRUE(apart.nodes[2].fusion.input_is_relu);
  const Tensor x2 = Input(Shape{10, 10, 1});
  const Tensor r = layers::Conv2D(8, {3, 3}, Activation::ReLU)(x2);
  const Tensor joined = layers::Concatenate()({layers::MaxPooling2D()(r), layers::MaxPooling2D()(r)});
  const Plan twice = make_plan(x2, layers::Dense(2, Activation::Softmax)(layers::Flatten()(joined)), Loss(), always);
  EXPECT_FALSE(twice.nodes[1].fusion.pools);
  // Another activation than ReLU keeps its own pass.
  const Tensor x3 = Input(Shape{10, 10, 1});
  const Tensor t = layers::MaxPooling2D()(layers::Conv2D(8, {3, 3}, Activation::Tanh)(x3));
  const Plan tanh = make_plan(x3, layers::Dense(2, Activation::Softmax)(layers::Flatten()(t)), Loss(), always);
  EXPECT_FALSE(tanh.nodes[1].fusion.pools);
}

// Two convolution + pooling blocks (the second needs its input's gradient), ReLU and no
// activation, "same" padding; `apart` puts a linear Activation between each convolution and its
// pooling, which keeps the host from fusing them and computes the same function.
std::unique_ptr<Model> conv_pool_model(bool apart) {
  const auto maybe_apart = [&](const Tensor& t) { return apart ? layers::Activation(Activation::Linear)(t) : t; };
  const Tensor x = Input(Shape{12, 12, 1});
  Tensor y = layers::Conv2D(8, {3, 3}, Activation::ReLU)(x);
  y = layers::MaxPooling2D()(maybe_apart(y));
  y = layers::Conv2D(16, {3, 3}, {.padding = Padding::Same})(y);
  y = layers::MaxPooling2D()(maybe_apart(y));
  return std::make_unique<Model>(x, layers::Dense(4, Activation::Softmax)(layers::Flatten()(y)));
}

TEST(Graph, FusedConvolutionAndPoolingTrainsLikeTheTwoLayersApart) {
  const ImageSet data = synthetic_images(48, 12, 12, 4, 5);
  std::vector<std::vector<float>> weights;
  std::vector<double> losses;
  std::vector<float> initial;
  for (const bool apart : {false, true}) {
    HostStrategy strategy(2, 1);
    auto model = conv_pool_model(apart);
    model->compile(strategy, optimizers::Adam({.learning_rate = 1e-2f}), {}, {}, 6);
    // The same starting point (the extra layers would draw other initial weights).
    if (apart) model->set_weights(initial);
    initial = model->get_weights();
    const History h = model->fit(data, {.epochs = 3, .batch_size = 16, .seed = 2, .verbose = 0});
    weights.push_back(model->get_weights());
    losses.push_back(h.epochs.back().loss);
    EXPECT_TRUE(model->replicas_identical());
  }
  ASSERT_EQ(weights[0].size(), weights[1].size());
  EXPECT_TRUE(all_close(weights[0], weights[1], 1e-4f, 1e-3f));
  EXPECT_NEAR(losses[0], losses[1], 1e-4 * std::max(1.0, std::fabs(losses[1])));
}

TEST(Graph, ATensorReadTwiceSumsItsGradientsAndBuffersAreReused) {
  const Tensor x = Input(Shape{6});
  const Tensor h = layers::Dense(6)(x);
  const Tensor sum = layers::Add()({layers::Dense(6)(h), h});  // h: read by a Dense and the Add
  Tensor y = sum;
  for (int i = 0; i < 8; ++i) y = layers::Dense(6, Activation::Tanh)(y);
  const Plan plan = make_plan(x, layers::Dense(3, Activation::Softmax)(y), Loss());
  // h (node 1) is read by node 2 (Dense) and node 3 (Add): the Add runs backward first and writes,
  // the Dense adds through the scratch gradient.
  EXPECT_EQ(plan.nodes[3].grad_targets[1], GradTarget::Write);
  EXPECT_EQ(plan.nodes[2].grad_targets[0], GradTarget::Scratch);
  EXPECT_EQ(plan.nodes[1].grad_targets[0], GradTarget::None);  // nothing needs the input's gradient
  // Eleven gradients alive one or two at a time: a handful of buffers serve them all.
  EXPECT_LE(plan.grad_floats.size(), 3u);
}

// The training loss of one step at `weights` (the step's update is negligible), in float.
double training_loss(Model& model, const ImageSet& data, const std::vector<float>& weights) {
  model.set_weights(weights);
  const History h = model.fit(data, {.epochs = 1, .batch_size = data.count, .shuffle = false, .verbose = 0});
  return h.epochs[0].loss;
}

void expect_gradient_matches_finite_differences(int replicas, bool synchronized) {
  HostStrategy strategy(replicas, 1);
  auto model = small_resnet(synchronized, 0.0f, Activation::GELU);
  const ImageSet data = synthetic_images(8, 8, 8, 5, 21);
  model->compile(strategy, optimizers::SGD({.learning_rate = 1.0f}), {}, {}, 4);
  const std::vector<float> w0 = model->get_weights();
  model->fit(data, {.epochs = 1, .batch_size = data.count, .shuffle = false, .verbose = 0});
  const std::vector<float> w1 = model->get_weights();
  model->compile(strategy, optimizers::SGD({.learning_rate = 1e-30f}), {}, {}, 4);
  const std::vector<VariableInfo> vars = model->variables();
  std::vector<double> analytic, numeric;
  size_t offset = 0;
  for (const VariableInfo& v : vars) {
    for (int64_t i = 0; i < v.shape.count(); i += v.trainable ? 3 : v.shape.count()) {  // every third element
      if (!v.trainable) break;
      const size_t k = offset + static_cast<size_t>(i);
      const double h = 1e-3;
      std::vector<float> w = w0;
      w[k] = static_cast<float>(w0[k] + h);
      const double up = training_loss(*model, data, w);
      w[k] = static_cast<float>(w0[k] - h);
      const double down = training_loss(*model, data, w);
      numeric.push_back((up - down) / (double(w0[k] + h) - double(w0[k] - h)) * 1.0);
      analytic.push_back(double(w0[k]) - double(w1[k]));  // SGD with learning rate 1: w1 = w0 - g
    }
    offset += static_cast<size_t>(v.shape.count());
  }
  double scale = 0;
  for (double g : numeric) scale = std::max(scale, std::fabs(g));
  ASSERT_GT(scale, 1e-4);
  size_t bad = 0;
  for (size_t i = 0; i < numeric.size(); ++i)
    if (std::fabs(analytic[i] - numeric[i]) > 5e-3 * scale + 5e-2 * std::fabs(numeric[i]) && ++bad <= 5)
      ADD_FAILURE() << "gradient " << i << ": analytic " << analytic[i] << ", numeric " << numeric[i];
  EXPECT_EQ(bad, 0u) << "of " << numeric.size();
}

TEST(Graph, ResidualBlocksGradientMatchesFiniteDifferences) { expect_gradient_matches_finite_differences(1, false); }

TEST(Graph, SynchronizedResidualBlocksGradientOnThreeReplicasMatchesFiniteDifferences) {
  expect_gradient_matches_finite_differences(3, true);
}

// Variables after `steps` steps with `replicas` host replicas.
std::vector<float> train_resnet(int replicas, int64_t batch, int steps, bool synchronized, float dropout) {
  HostStrategy strategy(replicas, 1);
  auto model = small_resnet(synchronized, dropout);
  model->compile(strategy, optimizers::SGD({.learning_rate = 0.1f, .momentum = 0.9f}), {}, {metrics::Accuracy()}, 9);
  const ImageSet data = synthetic_images(60, 8, 8, 5, 5);
  model->fit(data, {.epochs = 1, .batch_size = batch, .seed = 13, .verbose = 0, .steps_per_epoch = steps,
                    .verify_replicas = true, .gradient_bucket_bytes = 61 * sizeof(float)});
  return model->get_weights();
}

TEST(Graph, SynchronizedBatchNormAndDropoutTrainTheSameOnOneTwoAndThreeReplicas) {
  const auto one = train_resnet(1, 12, 5, true, 0.3f);
  EXPECT_TRUE(all_close(train_resnet(2, 12, 5, true, 0.3f), one, 1e-4, 1e-6));
  EXPECT_TRUE(all_close(train_resnet(3, 12, 5, true, 0.3f), one, 1e-4, 1e-6));
  // The last batch of 60 in 11s has 5 rows: 2/2/1 on three replicas; batch 2 leaves one empty.
  EXPECT_TRUE(all_close(train_resnet(3, 11, 6, true, 0.3f), train_resnet(1, 11, 6, true, 0.3f), 1e-4, 1e-6));
  EXPECT_TRUE(all_close(train_resnet(3, 2, 3, true, 0.0f), train_resnet(1, 2, 3, true, 0.0f), 1e-4, 1e-6));
}

TEST(Graph, UnsynchronizedBatchNormKeepsTheReplicasIdentical) {
  // Each replica normalizes over its own share (so the result differs from one replica), but the
  // moving statistics follow the global batch: verify_replicas checks every step.
  const auto two = train_resnet(2, 12, 4, false, 0.0f);
  EXPECT_FALSE(all_close(two, train_resnet(1, 12, 4, false, 0.0f), 1e-6, 1e-9));
}

TEST(Graph, BatchNormUsesBatchMomentsInTrainingAndMovingOnesInInference) {
  HostStrategy strategy(2, 1);
  auto model = small_resnet(false);
  model->compile(strategy, optimizers::Adam(), {}, {metrics::Accuracy()}, 2);
  const ImageSet data = synthetic_images(40, 8, 8, 5, 3);
  const std::vector<float> before = model->get_weights();
  model->fit(data, {.epochs = 2, .batch_size = 10, .verbose = 0});
  const std::vector<float> after = model->get_weights();
  // The first BN layer's moving mean (after the 4x3x3x1 + 4 stem): no longer its zeros.
  size_t offset = 0;
  for (const VariableInfo& v : model->variables()) {
    if (v.path == "batch_normalization/moving_mean") break;
    offset += static_cast<size_t>(v.shape.count());
  }
  bool moved = false;
  for (size_t i = 0; i < 4; ++i) moved = moved || after[offset + i] != before[offset + i];
  EXPECT_TRUE(moved);
  // Inference: the same sample gives the same output whatever else is in its batch.
  const auto all = model->predict(data, 40);
  const auto single = model->predict(data.head(1), 1);
  for (size_t j = 0; j < 5; ++j) EXPECT_NEAR(single[j], all[j], 1e-6);
}

TEST(Graph, ApplicationsHaveKerasParameterCounts) {
  // keras.applications.ResNet50(weights=None).summary(): 25,636,712 total, 53,120 non-trainable.
  const auto resnet50 = applications::ResNet50();
  EXPECT_EQ(resnet50->count_params(), 25636712);
  EXPECT_EQ(resnet50->count_params() - resnet50->count_trainable_params(), 53120);
  EXPECT_EQ(resnet50->output_shape(), (Shape{1000}));
  const auto vars = resnet50->variables();
  EXPECT_EQ(vars.front().path, "conv1_conv/kernel");
  EXPECT_EQ(vars.back().path, "predictions/bias");
  // ResNet-20: 16-32-64 channels, 3 blocks per stage, projection shortcuts without bias.
  const auto resnet20 = applications::CifarResNet(20, Shape{28, 28, 1}, 10);
  EXPECT_EQ(resnet20->output_shape(), (Shape{10}));
  EXPECT_EQ(resnet20->layers().size(), 72u);  // 3 stem + 9 blocks x 7 + 2 projections x 2 + 2 head
  EXPECT_THROW(applications::CifarResNet(21), InvalidArgument);
}

TEST(GraphErrors, BadGraphsAreRefusedWithAMessage) {
  const Tensor x = Input(Shape{4, 4, 2});
  const LayerPtr dense = layers::Dense(3);
  const Tensor y = dense(layers::Flatten()(x));
  EXPECT_NE(message_of<InvalidArgument>([&] { dense(layers::Flatten()(x)); }).find("already called"), std::string::npos);
  EXPECT_NE(message_of<InvalidArgument>([&] { layers::Add()({y, layers::Dense(4)(y)}); }).find("(3,)"), std::string::npos);
  EXPECT_THROW(layers::Add()(y), InvalidArgument);  // one input
  EXPECT_THROW(layers::Concatenate()({x, layers::Flatten()(x)}), InvalidArgument);
  const Tensor other = Input(Shape{3});
  EXPECT_NE(message_of<InvalidArgument>([&] { Model m(x, layers::Add()({y, other})); }).find("one input"), std::string::npos);
  const Tensor a = layers::Dense(3, {.name = "same"})(y);
  EXPECT_NE(message_of<InvalidArgument>([&] { Model m(x, layers::Dense(3, {.name = "same"})(a)); }).find("'same'"),
            std::string::npos);
  EXPECT_THROW(layers::Reshape(Shape{5, -1})(x), InvalidArgument);
  EXPECT_EQ(layers::Reshape(Shape{-1, 4})(x).shape(), (Shape{8, 4}));
  EXPECT_THROW(layers::Dropout(1.0f), InvalidArgument);
  EXPECT_THROW(layers::BatchNormalization({.momentum = 1.5f}), InvalidArgument);
}


TEST(GraphErrors, ALayerThatCannotBeBuiltIsNamedAsTheModelWouldNameIt) {
  const Tensor x = Input(Shape{4, 4, 2});
  const Tensor y = layers::Dense(3)(layers::Dense(3)(layers::Flatten()(x)));
  const Tensor grid = layers::Reshape(Shape{3, 1})(y);
  const LayerPtr third = layers::Dense(2);
  const std::string message = message_of<InvalidArgument>([&] { third(grid); });
  EXPECT_NE(message.find("layer 'dense_2' (Dense) expects flat inputs"), std::string::npos) << message;
  // The failed call leaves it unnamed and unbuilt: called again, the model names it.
  EXPECT_EQ(third->name(), "");
  const Model model(x, third(y));
  EXPECT_EQ(third->name(), "dense_2");
  EXPECT_NE(message_of<InvalidArgument>([] { layers::Dense(2)(Input(Shape{2, 2})); }).find("layer 'dense' "), std::string::npos);
}

// ---- Graphs 100,000 layers deep ------------------------------------------------------------------
// Named in one pass, planned, walked in Keras's order and freed without a recursion as deep as the
// model. Reshape and Activation are the cheapest layers; two kinds check that each counts its own.

constexpr int kDeep = 100000;

std::string deep_name(int i) {
  const std::string stem = i % 2 ? "reshape" : "activation";
  return i < 2 ? stem : str(stem, "_", i / 2);
}

std::vector<LayerPtr> deep_layers() {
  std::vector<LayerPtr> result;
  result.reserve(kDeep);
  for (int i = 0; i < kDeep; ++i)
    result.push_back(i % 2 ? layers::Reshape(Shape{4}) : layers::Activation(mirror::Activation::ReLU));
  return result;
}

void expect_deep_model_plans(const Model& model) {
  const std::vector<LayerPtr> layers = model.layers();
  ASSERT_EQ(layers.size(), static_cast<size_t>(kDeep));
  for (int i = 0; i < kDeep; ++i) ASSERT_EQ(layers[static_cast<size_t>(i)]->name(), deep_name(i)) << "layer " << i;
  const Plan plan = make_plan(model.input(), model.output(), losses::MeanSquaredError());
  ASSERT_EQ(plan.nodes.size(), static_cast<size_t>(kDeep) + 1);
  for (int i = 0; i < kDeep; ++i) ASSERT_EQ(plan.nodes[static_cast<size_t>(i) + 1].layer, layers[static_cast<size_t>(i)].shared());
  const std::vector<saving::KerasLayer> walked = saving::keras_layers(model);
  ASSERT_EQ(walked.size(), static_cast<size_t>(kDeep) + (model.sequential() ? 0 : 1));  // a functional model's input too
  EXPECT_EQ(walked.back().key, str("reshape_", kDeep / 2 - 1));
  EXPECT_EQ(walked.back().name, deep_name(kDeep - 1));
}

TEST(DeepGraphs, AHundredThousandLayerSequentialIsNamedAndPlanned) {
  Sequential model(deep_layers());
  model.build(Shape{4});
  expect_deep_model_plans(model);
}

TEST(DeepGraphs, AHundredThousandLayerFunctionalModelIsNamedAndPlanned) {
  const Tensor x = Input(Shape{4});
  Tensor y = x;
  for (const LayerPtr& layer : deep_layers()) y = layer(y);
  const Model model(x, y);
  expect_deep_model_plans(model);
}

TEST(DeepGraphs, AHundredThousandLayerSequentialLoadsFromAKerasFile) {
  // Its layers have no variables, so the weights file needs no layer groups: the archive is small.
  std::vector<uint8_t> archive;
  {
    Sequential model(deep_layers());
    model.build(Shape{4});
    const auto bytes_of = [](const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); };
    archive = saving::write_zip({{"metadata.json", bytes_of(R"({"keras_version": "3.15.1"})")},
                                 {"config.json", bytes_of(saving::model_config(model).dump())},
                                 {"model.weights.h5", saving::write_weights_h5({})}});
  }
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / str("mirror_deep_", ::getpid());
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "deep.keras").string();
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(archive.data()), static_cast<std::streamsize>(archive.size()));
  std::unique_ptr<Model> loaded;
  EXPECT_NO_THROW(loaded = load_model(path));
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(loaded != nullptr);
  expect_deep_model_plans(*loaded);
}

}  // namespace
}  // namespace mirror
