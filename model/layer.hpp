// Layer: one stage of a Sequential model. A layer object describes the computation and owns no
// replica state: its parameters live in each replica's flat buffer and reach it as views, so the
// same layer runs on every replica's backend.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/activation.hpp"
#include "engine/backend.hpp"
#include "engine/shape.hpp"

namespace mirror {

enum class Initializer { GlorotUniform, Zeros };

struct ParamSpec {
  std::string name;  // "kernel", "bias"
  Shape shape;
  Initializer init = Initializer::Zeros;
  int64_t fan_in = 0, fan_out = 0;  // for Glorot: limit = sqrt(6 / (fan_in + fan_out))
};

// How a layer's backward pass is fused with its neighbours'.
struct BackwardFlags {
  // dy already is dL/d(pre-activation): the loss took the gradient through this layer's softmax,
  // or the next layer applied this layer's ReLU derivative.
  bool activation_done = false;
  // x is the output of a ReLU whose derivative this layer applies to dx (only when
  // absorbs_input_relu()), so the layer before skips its activation backward.
  bool input_is_relu = false;
};

// What a layer computes with, on one replica for one batch.
struct LayerArgs {
  Backend& backend;
  int64_t rows;                     // samples in this replica's share of the batch (> 0)
  std::span<float* const> params;   // this layer's parameters, in param_specs() order
  std::span<float* const> grads;    // their gradients, same order (written, not accumulated)
};

class Layer {
 public:
  virtual ~Layer() = default;

  virtual std::string type() const = 0;  // Keras's class name: "Conv2D"
  // Keras's default name stem: "conv2d" (Sequential appends _1, _2, ... to repeats).
  virtual std::string default_name() const = 0;
  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }

  // The per-sample input shape given at construction (Keras's input_shape), if any.
  const std::optional<Shape>& declared_input_shape() const { return declared_input_; }

  // Fixes the per-sample input shape; returns the per-sample output shape. Throws
  // InvalidArgument (naming the layer) when the input does not fit.
  virtual Shape build(const Shape& input) = 0;
  const Shape& input_shape() const { return input_; }
  const Shape& output_shape() const { return output_; }

  virtual std::vector<ParamSpec> param_specs() const { return {}; }
  virtual Activation activation() const { return Activation::Linear; }
  // True when the output is the input reinterpreted (Flatten): no op runs, buffers are shared.
  virtual bool is_reshape() const { return false; }
  // True when backward can fold the derivative of a ReLU that produced its input into dx
  // (max pooling: one pass instead of two).
  virtual bool absorbs_input_relu() const { return false; }

  // y = layer(x). x: (rows, input_shape), y: (rows, output_shape).
  virtual void forward(const LayerArgs& args, const float* x, float* y) = 0;
  // Given x and y from forward and dy = dL/dy (overwritten in place by the activation's backward
  // unless flags.activation_done), writes the parameter gradients and, unless null, dx = dL/dx.
  virtual void backward(const LayerArgs& args, const float* x, const float* y, float* dy, float* dx,
                        BackwardFlags flags) = 0;

 protected:
  explicit Layer(std::optional<Shape> declared_input = std::nullopt) : declared_input_(std::move(declared_input)) {}
  void set_shapes(const Shape& in, const Shape& out) {
    input_ = in;
    output_ = out;
  }

 private:
  std::string name_;
  std::optional<Shape> declared_input_;
  Shape input_, output_;
};

using LayerPtr = std::shared_ptr<Layer>;

}  // namespace mirror
