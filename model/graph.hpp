// The functional API: symbolic tensors joined by layer calls, in Keras's spirit.
//
//   Tensor x = Input(Shape{28, 28, 1});
//   Tensor y = layers::Conv2D(16, {3, 3}, {.padding = Padding::Same})(x);
//   y = layers::BatchNormalization()(y);
//   y = layers::Add()({x2, y});
//   Model model(x, y);
//
// A Tensor is a handle to a node's output: its per-sample shape and where it comes from. Calling a
// layer on tensors builds the layer (fixing its shapes and variables) and records a node.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "mirror/engine/shape.hpp"
#include "mirror/model/layer.hpp"

namespace mirror {

struct Node;

class Tensor {
 public:
  Tensor() = default;
  const Shape& shape() const;
  // The node that computes it (an input node for Input()).
  const std::shared_ptr<Node>& node() const { return node_; }
  bool valid() const { return node_ != nullptr; }

 private:
  friend Tensor make_tensor(std::shared_ptr<Node> node);
  friend struct Node;
  std::shared_ptr<Node> node_;
};

// One call of a layer on its inputs, or a model input (layer null).
struct Node {
  std::shared_ptr<Layer> layer;  // null for an input
  std::vector<Tensor> inputs;
  Shape shape;                   // the output's per-sample shape
  std::string input_name;        // for an input node

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // Frees the chain of nodes only this one holds in a loop, not by recursion (see graph.cpp).
  ~Node();
};

Tensor make_tensor(std::shared_ptr<Node> node);

// A model input of the given per-sample shape (Keras's keras.Input(shape=...)).
Tensor Input(Shape shape, std::string name = "input_layer");

// A shared handle to a layer that can also be called on tensors: layers::Dense(10)(x).
class LayerPtr {
 public:
  LayerPtr() = default;
  template <typename L, typename = std::enable_if_t<std::is_base_of_v<Layer, L>>>
  LayerPtr(std::shared_ptr<L> layer) : layer_(std::move(layer)) {}  // NOLINT: implicit by design
  LayerPtr(std::nullptr_t) {}                                            // NOLINT

  Layer* operator->() const { return layer_.get(); }
  Layer& operator*() const { return *layer_; }
  Layer* get() const { return layer_.get(); }
  const std::shared_ptr<Layer>& shared() const { return layer_; }
  explicit operator bool() const { return layer_ != nullptr; }
  friend bool operator==(const LayerPtr& a, const LayerPtr& b) { return a.layer_ == b.layer_; }
  friend bool operator==(const LayerPtr& a, std::nullptr_t) { return a.layer_ == nullptr; }

  // Calls the layer on one input / several inputs (Add, Concatenate). A layer is called once:
  // sharing one layer's weights between two calls is not supported.
  Tensor operator()(const Tensor& input) const;
  Tensor operator()(const std::vector<Tensor>& inputs) const;
  Tensor operator()(std::initializer_list<Tensor> inputs) const { return (*this)(std::vector<Tensor>(inputs)); }

 private:
  std::shared_ptr<Layer> layer_;
};

}  // namespace mirror
