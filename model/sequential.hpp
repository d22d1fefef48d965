// Sequential: a stack of layers, each fed by the one before -- a linear model graph built on the
// functional machinery, with Keras's Sequential API.
//
//   Sequential model({layers::Conv2D(32, {3, 3}, Activation::ReLU, Shape{28, 28, 1}),
//                     layers::MaxPooling2D({2, 2}), layers::Flatten(),
//                     layers::Dense(10, Activation::Softmax)});
//   model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()});
//   model.fit(data.train, {.epochs = 2, .batch_size = 32});
//
// The graph is built at compile() when the first layer declares its input shape, else at the
// first fit / evaluate / predict, from the data.
#pragma once

#include <initializer_list>
#include <string>
#include <unordered_map>
#include <vector>

#include "mirror/model/model.hpp"

namespace mirror {

class Sequential final : public Model {
 public:
  Sequential(std::initializer_list<LayerPtr> layers);
  explicit Sequential(std::vector<LayerPtr> layers = {}, std::string name = "sequential");

  // Appends a layer (named conv2d, conv2d_1, ... by kind); not after the model is built.
  void add(LayerPtr layer);
  std::vector<LayerPtr> layers() const override { return layers_; }
  // Builds the graph for samples of shape `input` (Keras's model.build), without data.
  void build(const Shape& input);

 protected:
  void build_declared() override;
  void build_from_data(const Shape& sample_shape) override;
  bool is_sequential() const override { return true; }

 private:
  std::vector<LayerPtr> layers_;
  std::unordered_map<std::string, int> default_name_counts_;  // layers added so far, by default_name()
};

}  // namespace mirror
