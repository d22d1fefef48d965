// Ready-made models, built with the functional API: Keras applications' ResNet50 and the CIFAR
// ResNets of He et al. (2016, section 4.2) that small images are trained with.
#pragma once

#include <cstdint>
#include <memory>

#include "mirror/model/model.hpp"

namespace mirror::applications {

// Keras applications' ResNet50 (keras.applications.ResNet50(weights=None)): the same layers,
// names and variable order -- 7x7/2 stem on a 3-pixel zero frame, max pooling, bottleneck stacks of
// 3, 4, 6, 3 blocks (64-256 ... 512-2048 channels), global average pooling, softmax. 25.6 M
// parameters for 224x224x3 inputs and 1000 classes. `synchronized_bn` makes every batch
// normalization synchronized across replicas.
std::unique_ptr<Model> ResNet50(Shape input_shape = Shape{224, 224, 3}, int64_t classes = 1000, bool synchronized_bn = false);

// A CIFAR-style ResNet of depth 6n + 2 (20, 32, 44, 56, ...): a 3x3 convolution of 16 channels,
// three stages of n basic blocks (16, 32, 64 channels; the second and third start with stride 2
// and a 1x1 projection shortcut), global average pooling, softmax. ResNet-20: 0.27 M parameters.
std::unique_ptr<Model> CifarResNet(int depth = 20, Shape input_shape = Shape{32, 32, 3}, int64_t classes = 10,
                                   bool synchronized_bn = false);

}  // namespace mirror::applications
