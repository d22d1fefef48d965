// The layers a user builds models from, with Keras's names, arguments and defaults. Each returns
// a LayerPtr that goes into a Sequential or is called on tensors (graph.hpp):
//   layers::Conv2D(32, {3, 3}, Activation::ReLU, Shape{28, 28, 1})
//   layers::Conv2D(64, {3, 3}, {.strides = {2, 2}, .padding = Padding::Same, .use_bias = false})(x)
//   layers::BatchNormalization({.synchronized = true})(x)
//   layers::Add()({shortcut, x})
#pragma once

#include <array>
#include <optional>
#include <string>

#include "mirror/engine/geometry.hpp"
#include "mirror/model/graph.hpp"

namespace mirror::layers {

using Size2 = std::array<int64_t, 2>;

struct Conv2DOptions {
  Size2 strides = {1, 1};
  Padding padding = Padding::Valid;
  mirror::Activation activation = mirror::Activation::Linear;
  bool use_bias = true;
  Initializer kernel_initializer = Initializer::GlorotUniform;  // bias: zeros
  std::optional<Shape> input_shape = std::nullopt;
  std::string name = "";
};
// 2-D convolution over NHWC; kernel HWIO.
LayerPtr Conv2D(int64_t filters, Size2 kernel_size, mirror::Activation activation = mirror::Activation::Linear,
                std::optional<Shape> input_shape = std::nullopt, Size2 strides = {1, 1});
LayerPtr Conv2D(int64_t filters, Size2 kernel_size, const Conv2DOptions& options);

struct DenseOptions {
  mirror::Activation activation = mirror::Activation::Linear;
  bool use_bias = true;
  Initializer kernel_initializer = Initializer::GlorotUniform;
  std::optional<Shape> input_shape = std::nullopt;
  std::string name = "";
};
// Fully connected: y = act(x kernel + bias); kernel (in, units).
LayerPtr Dense(int64_t units, mirror::Activation activation = mirror::Activation::Linear,
               std::optional<Shape> input_shape = std::nullopt);
LayerPtr Dense(int64_t units, const DenseOptions& options);

struct PoolOptions {
  std::optional<Size2> strides = std::nullopt;  // default: the pool size, as in Keras
  Padding padding = Padding::Valid;
  std::string name = "";
};
LayerPtr MaxPooling2D(Size2 pool_size = {2, 2}, std::optional<Size2> strides = std::nullopt);
LayerPtr MaxPooling2D(Size2 pool_size, const PoolOptions& options);
// Averages over the window; with "same" padding the padded positions are not counted (Keras).
LayerPtr AveragePooling2D(Size2 pool_size = {2, 2}, const PoolOptions& options = {});
// (H, W, C) -> (C): the mean over every position.
LayerPtr GlobalAveragePooling2D(std::string name = "");

struct BatchNormalizationOptions {
  float momentum = 0.99f;
  float epsilon = 1e-3f;
  bool center = true;  // learn beta
  bool scale = true;   // learn gamma
  // Mean and variance over the global batch across all replicas (TensorFlow's
  // SyncBatchNormalization); otherwise each replica normalizes over its own share, as Keras does
  // under MirroredStrategy. Either way the moving statistics are updated from the global batch's
  // moments, so every replica keeps the same ones.
  bool synchronized = false;
  std::string name = "";
};
// Over the last axis (Keras's axis=-1). Variables: gamma, beta, moving_mean, moving_variance.
LayerPtr BatchNormalization(const BatchNormalizationOptions& options = {});

// Inverted dropout: in training each element is zeroed with probability `rate` and the rest scaled
// by 1 / (1 - rate); a sample's mask depends on the seed, the step and its index in the global
// batch, not on how the batch was split. Inference passes the input through.
LayerPtr Dropout(float rate, std::string name = "");

// Applies an activation function (Keras's layers.Activation).
LayerPtr Activation(mirror::Activation activation, std::string name = "");
LayerPtr ReLU(std::string name = "");

// The element-wise sum of two or more inputs of the same shape.
LayerPtr Add(std::string name = "");
// Joins two or more inputs along the last axis (the other dimensions must agree).
LayerPtr Concatenate(std::string name = "");

// Zeros around the image: ((top, bottom), (left, right)) pixels (Keras's ZeroPadding2D).
LayerPtr ZeroPadding2D(std::array<PadPair, 2> padding, std::string name = "");
LayerPtr ZeroPadding2D(int64_t padding = 1, std::string name = "");

// Flattens (H, W, C) to (H*W*C) in NHWC order, Keras's order, so Dense kernels are interchangeable.
LayerPtr Flatten(std::optional<Shape> input_shape = std::nullopt);
// The same data under another per-sample shape; one dimension may be -1 (inferred).
LayerPtr Reshape(Shape target_shape, std::string name = "");

}  // namespace mirror::layers
