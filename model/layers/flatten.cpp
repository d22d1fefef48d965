// Flatten: a reshape. NHWC is already the flattened order, so no op runs and buffers are shared.
#include "model/layers.hpp"

namespace mirror {
namespace {

class FlattenLayer final : public Layer {
 public:
  explicit FlattenLayer(std::optional<Shape> input) : Layer(std::move(input)) {}

  std::string type() const override { return "Flatten"; }
  std::string default_name() const override { return "flatten"; }
  bool is_reshape() const override { return true; }

  Shape build(const Shape& in) override {
    const Shape out{in.count()};
    set_shapes(in, out);
    return out;
  }

  // Sequential aliases this layer's output and gradient to its input's, so there is nothing to do.
  void forward(const LayerArgs&, const float*, float*) override {}
  void backward(const LayerArgs&, const float*, const float*, float*, float*, BackwardFlags) override {}
};

}  // namespace

LayerPtr layers::Flatten(std::optional<Shape> input_shape) {
  return std::make_shared<FlattenLayer>(std::move(input_shape));
}

}  // namespace mirror
