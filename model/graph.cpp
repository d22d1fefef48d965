// Symbolic tensors and layer calls (see graph.hpp), and Layer::build.
#include "mirror/model/graph.hpp"

#include "mirror/engine/error.hpp"

namespace mirror {

Shape Layer::build(std::span<const Shape> inputs) {
  const int expected = input_count();
  MIRROR_REQUIRE(expected == kAnyInputs ? inputs.size() >= 2 : static_cast<int>(inputs.size()) == expected,
                 InvalidArgument, "layer '", name(), "' (", type(), ") takes ",
                 expected == kAnyInputs ? std::string("two or more inputs") : str(expected, expected == 1 ? " input" : " inputs"),
                 ", got ", inputs.size());
  output_ = compute_output_shape(inputs);
  inputs_.assign(inputs.begin(), inputs.end());
  built_ = true;
  return output_;
}

const Shape& Tensor::shape() const {
  MIRROR_REQUIRE(node_ != nullptr, InvalidArgument, "an empty Tensor has no shape: make tensors with Input() and layer calls");
  return node_->shape;
}

Tensor make_tensor(std::shared_ptr<Node> node) {
  Tensor t;
  t.node_ = std::move(node);
  return t;
}

Tensor Input(Shape shape, std::string name) {
  MIRROR_REQUIRE(shape.rank() >= 1, InvalidArgument, "Input needs a per-sample shape such as Shape{28, 28, 1}");
  for (int64_t d : shape.dims())
    MIRROR_REQUIRE(d > 0, InvalidArgument, "Input shape ", shape, " has a dimension that is not positive");
  auto node = std::make_shared<Node>();
  node->shape = std::move(shape);
  node->input_name = std::move(name);
  return make_tensor(std::move(node));
}

Tensor LayerPtr::operator()(const Tensor& input) const { return (*this)(std::vector<Tensor>{input}); }

Tensor LayerPtr::operator()(const std::vector<Tensor>& inputs) const {
  MIRROR_REQUIRE(layer_ != nullptr, InvalidArgument, "called a null layer");
  MIRROR_REQUIRE(!layer_->built(), InvalidArgument, "layer '", layer_->name(), "' (", layer_->type(),
                 ") was already called once; Mirror does not share a layer's weights between calls: make a second layer");
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) {
    MIRROR_REQUIRE(t.valid(), InvalidArgument, "layer '", layer_->name(), "' (", layer_->type(), ") was called on an empty Tensor");
    shapes.push_back(t.shape());
  }
  auto node = std::make_shared<Node>();
  node->layer = layer_;
  node->inputs = inputs;
  node->shape = layer_->build(shapes);
  return make_tensor(std::move(node));
}

}  // namespace mirror
