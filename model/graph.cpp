// Symbolic tensors and layer calls (see graph.hpp), and Layer::build.
#include "mirror/model/graph.hpp"

#include <unordered_set>

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

Node::~Node() {
  // Each node owns its inputs' nodes, so dropping the last tensor of a chain would destroy the
  // chain recursively, one stack frame per layer: a model 100,000 layers deep overflows the stack.
  // Inputs that only this chain holds are detached first and freed here, each with no inputs left.
  std::vector<std::shared_ptr<Node>> pending;
  const auto detach = [&pending](std::vector<Tensor>& inputs) {
    for (Tensor& t : inputs)
      if (t.node_ && t.node_.use_count() == 1) pending.push_back(std::move(t.node_));
    inputs.clear();
  };
  detach(inputs);
  while (!pending.empty()) {
    std::shared_ptr<Node> node = std::move(pending.back());
    pending.pop_back();
    detach(node->inputs);
  }
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

namespace {

// The name the model gives an unnamed layer called on `inputs` if the model ends at this call:
// its default name numbered by the unnamed layers of its kind before it (dense, dense_1, ...).
// Walks every earlier layer, so it is only worked out for an error message.
std::string name_to_come(const Layer& layer, const std::vector<Tensor>& inputs) {
  std::unordered_set<const Node*> seen;
  std::vector<const Node*> stack;
  const auto push = [&](const Tensor& t) {
    if (t.valid() && seen.insert(t.node().get()).second) stack.push_back(t.node().get());
  };
  for (const Tensor& t : inputs) push(t);
  int before = 0;
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    if (n->layer && n->layer->name().empty() && n->layer->default_name() == layer.default_name()) ++before;
    for (const Tensor& t : n->inputs) push(t);
  }
  return before ? str(layer.default_name(), "_", before) : layer.default_name();
}

// Builds `layer` for `inputs`. An unnamed layer gets its name when a model is made of the graph,
// so a build that fails is repeated under the name it would get, for an error that names it.
Shape build_layer(Layer& layer, const std::vector<Tensor>& inputs, std::span<const Shape> shapes) {
  if (!layer.name().empty()) return layer.build(shapes);
  try {
    return layer.build(shapes);
  } catch (const Error&) {
    layer.set_name(name_to_come(layer, inputs));
  }
  try {
    const Shape shape = layer.build(shapes);
    layer.set_name("");
    return shape;
  } catch (...) {
    layer.set_name("");
    throw;
  }
}

}  // namespace

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
  node->shape = build_layer(*layer_, inputs, shapes);
  return make_tensor(std::move(node));
}

}  // namespace mirror
