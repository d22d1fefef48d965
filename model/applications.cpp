// ResNet50 and the CIFAR ResNets (see applications.hpp).
#include "mirror/model/applications.hpp"

#include <string>

#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"

namespace mirror::applications {
namespace {

using namespace layers;

// Keras's ResNet50 block1: 1x1 -> 3x3 -> 1x1 (4x filters), with a projection shortcut in the
// first block of each stack. Keras names every layer "<stack>_block<i>_<part>".
Tensor bottleneck(const Tensor& x, int64_t filters, int64_t stride, bool projection, const std::string& name, bool sync) {
  const auto bn = [&](const std::string& n) { return BatchNormalization({.epsilon = 1.001e-5f, .synchronized = sync, .name = n}); };
  Tensor shortcut = x;
  if (projection)
    shortcut = bn(name + "_0_bn")(Conv2D(4 * filters, {1, 1}, {.strides = {stride, stride}, .name = name + "_0_conv"})(x));
  Tensor y = Conv2D(filters, {1, 1}, {.strides = {stride, stride}, .name = name + "_1_conv"})(x);
  y = layers::Activation(mirror::Activation::ReLU, name + "_1_relu")(bn(name + "_1_bn")(y));
  y = Conv2D(filters, {3, 3}, {.padding = Padding::Same, .name = name + "_2_conv"})(y);
  y = layers::Activation(mirror::Activation::ReLU, name + "_2_relu")(bn(name + "_2_bn")(y));
  y = bn(name + "_3_bn")(Conv2D(4 * filters, {1, 1}, {.name = name + "_3_conv"})(y));
  return layers::Activation(mirror::Activation::ReLU, name + "_out")(Add(name + "_add")({shortcut, y}));
}

Tensor stack(Tensor x, int64_t filters, int blocks, int64_t stride, const std::string& name, bool sync) {
  x = bottleneck(x, filters, stride, true, name + "_block1", sync);
  for (int i = 2; i <= blocks; ++i) x = bottleneck(x, filters, 1, false, name + "_block" + std::to_string(i), sync);
  return x;
}

// conv3x3 - BN - ReLU - conv3x3 - BN, plus the shortcut, then ReLU.
Tensor basic_block(const Tensor& x, int64_t filters, int64_t stride, bool sync) {
  const BatchNormalizationOptions bn{.synchronized = sync};
  const Conv2DOptions conv{.strides = {stride, stride}, .padding = Padding::Same, .use_bias = false,
                           .kernel_initializer = Initializer::HeNormal};
  Tensor y = ReLU()(BatchNormalization(bn)(Conv2D(filters, {3, 3}, conv)(x)));
  y = BatchNormalization(bn)(Conv2D(filters, {3, 3}, {.padding = Padding::Same, .use_bias = false,
                                                      .kernel_initializer = Initializer::HeNormal})(y));
  Tensor shortcut = x;
  if (stride != 1 || x.shape()[2] != filters)
    shortcut = BatchNormalization(bn)(Conv2D(filters, {1, 1}, {.strides = {stride, stride}, .use_bias = false,
                                                               .kernel_initializer = Initializer::HeNormal})(x));
  return ReLU()(Add()({shortcut, y}));
}

}  // namespace

std::unique_ptr<Model> ResNet50(Shape input_shape, int64_t classes, bool sync) {
  MIRROR_REQUIRE(input_shape.rank() == 3 && input_shape[0] >= 32 && input_shape[1] >= 32, InvalidArgument,
                 "ResNet50 needs images of at least 32x32, got ", input_shape);
  const Tensor input = Input(input_shape, "input_layer");
  Tensor x = ZeroPadding2D({PadPair{3, 3}, PadPair{3, 3}}, "conv1_pad")(input);
  x = Conv2D(64, {7, 7}, {.strides = {2, 2}, .name = "conv1_conv"})(x);
  x = BatchNormalization({.epsilon = 1.001e-5f, .synchronized = sync, .name = "conv1_bn"})(x);
  x = layers::Activation(mirror::Activation::ReLU, "conv1_relu")(x);
  x = ZeroPadding2D({PadPair{1, 1}, PadPair{1, 1}}, "pool1_pad")(x);
  x = MaxPooling2D({3, 3}, PoolOptions{.strides = Size2{2, 2}, .name = "pool1_pool"})(x);
  x = stack(x, 64, 3, 1, "conv2", sync);
  x = stack(x, 128, 4, 2, "conv3", sync);
  x = stack(x, 256, 6, 2, "conv4", sync);
  x = stack(x, 512, 3, 2, "conv5", sync);
  x = GlobalAveragePooling2D("avg_pool")(x);
  x = Dense(classes, {.activation = mirror::Activation::Softmax, .name = "predictions"})(x);
  return std::make_unique<Model>(input, x, "resnet50");
}

std::unique_ptr<Model> CifarResNet(int depth, Shape input_shape, int64_t classes, bool sync) {
  MIRROR_REQUIRE(depth >= 8 && (depth - 2) % 6 == 0, InvalidArgument, "a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56), got ", depth);
  MIRROR_REQUIRE(input_shape.rank() == 3, InvalidArgument, "CifarResNet needs (height, width, channels) images, got ", input_shape);
  const int blocks = (depth - 2) / 6;
  const Tensor input = Input(input_shape);
  Tensor x = Conv2D(16, {3, 3}, {.padding = Padding::Same, .use_bias = false, .kernel_initializer = Initializer::HeNormal})(input);
  x = ReLU()(BatchNormalization({.synchronized = sync})(x));
  for (int stage = 0; stage < 3; ++stage)
    for (int b = 0; b < blocks; ++b) x = basic_block(x, int64_t{16} << stage, stage > 0 && b == 0 ? 2 : 1, sync);
  x = GlobalAveragePooling2D()(x);
  x = Dense(classes, {.activation = mirror::Activation::Softmax, .kernel_initializer = Initializer::HeNormal})(x);
  return std::make_unique<Model>(input, x, str("resnet", depth));
}

}  // namespace mirror::applications
