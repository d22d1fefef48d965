// Sequential: a linear graph of its layers (see sequential.hpp).
#include "mirror/model/sequential.hpp"

#include "mirror/engine/error.hpp"

namespace mirror {

Sequential::Sequential(std::initializer_list<LayerPtr> layers) : Sequential(std::vector<LayerPtr>(layers)) {}

Sequential::Sequential(std::vector<LayerPtr> layers, std::string name) : Model(std::move(name)) {
  for (auto& layer : layers) add(std::move(layer));
}

void Sequential::add(LayerPtr layer) {
  MIRROR_REQUIRE(layer != nullptr, InvalidArgument, "Sequential::add was given a null layer");
  MIRROR_REQUIRE(!built(), InvalidArgument, "cannot add layers to a model that is already built");
  MIRROR_REQUIRE(layer->input_count() == 1, InvalidArgument, "layer '", layer->type(),
                 "' takes several inputs and cannot be part of a Sequential model: use the functional API");
  // Named by how many layers of its kind (named or not) came before it: dense, dense_1, ...
  const int repeats = default_name_counts_[layer->default_name()]++;
  if (!layer->has_explicit_name()) layer->set_name(repeats ? str(layer->default_name(), "_", repeats) : layer->default_name());
  layers_.push_back(std::move(layer));
}

void Sequential::build(const Shape& input) {
  MIRROR_REQUIRE(!layers_.empty(), InvalidArgument, "the Sequential model has no layers");
  const Tensor x = Input(input);
  Tensor y = x;
  for (const LayerPtr& layer : layers_) y = layer(y);
  set_graph(x, y);
}

void Sequential::build_declared() {
  MIRROR_REQUIRE(!layers_.empty(), InvalidArgument, "cannot compile a model without layers");
  if (const auto& declared = layers_.front()->declared_input_shape()) build(*declared);
}

void Sequential::build_from_data(const Shape& sample_shape) { build(sample_shape); }

}  // namespace mirror
