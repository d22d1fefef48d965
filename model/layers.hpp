// The layers a user builds models from, with Keras's names, arguments and defaults:
//   layers::Conv2D(32, {3, 3}, Activation::ReLU, Shape{28, 28, 1})
//   layers::MaxPooling2D({2, 2})
//   layers::Flatten()
//   layers::Dense(10, Activation::Softmax)
#pragma once

#include <array>
#include <optional>

#include "model/layer.hpp"

namespace mirror::layers {

// 2-D convolution, "valid" padding, with bias; kernel HWIO, glorot-uniform, bias zeros.
LayerPtr Conv2D(int64_t filters, std::array<int64_t, 2> kernel_size, Activation activation = Activation::Linear,
                std::optional<Shape> input_shape = std::nullopt, std::array<int64_t, 2> strides = {1, 1});

// Max pooling, "valid" padding; strides default to the pool size, as in Keras.
LayerPtr MaxPooling2D(std::array<int64_t, 2> pool_size = {2, 2}, std::optional<std::array<int64_t, 2>> strides = std::nullopt);

// Flattens (H, W, C) to (H*W*C) in NHWC order, Keras's order, so Dense kernels are interchangeable.
LayerPtr Flatten(std::optional<Shape> input_shape = std::nullopt);

// Fully connected: y = act(x kernel + bias); kernel (in, units) glorot-uniform, bias zeros.
LayerPtr Dense(int64_t units, Activation activation = Activation::Linear, std::optional<Shape> input_shape = std::nullopt);

}  // namespace mirror::layers
