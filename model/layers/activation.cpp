// Activation and ReLU layers: an activation function on its own. Its activation() is what it
// applies, so the fusion pass can fold it into a max pooling's or the loss's backward.
#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/layers/config_util.hpp"

namespace mirror {
namespace {

class ActivationLayer final : public Layer {
 public:
  ActivationLayer(Activation act, std::string type, std::string default_name, std::string name)
      : Layer(std::nullopt, std::move(name)), act_(act), type_(std::move(type)), default_name_(std::move(default_name)) {}

  std::string type() const override { return type_; }
  std::string default_name() const override { return default_name_; }
  Activation activation() const override { return act_; }

  std::vector<std::pair<std::string, std::string>> config() const override {
    if (type_ == "ReLU") return {};  // Keras's defaults: no max_value, slope 0, threshold 0
    return {{"activation", layer_util::json_string(to_string(act_))}};
  }

  void forward(const ForwardArgs& a) override {
    a.ctx.backend.activation_forward(act_, rows(a.ctx), cols(), a.inputs[0], a.output);
  }

  void backward(const BackwardArgs& a) override {
    if (!a.dx[0]) return;
    if (a.fusion.activation_done) {
      a.ctx.backend.copy(a.dy, a.dx[0], static_cast<size_t>(rows(a.ctx) * cols()));
      return;
    }
    a.ctx.backend.activation_backward(act_, rows(a.ctx), cols(), a.inputs[0], a.output, a.dy, a.dx[0]);
  }

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override { return inputs[0]; }

 private:
  // Softmax runs over the last axis; the others do not care how the elements are grouped.
  int64_t cols() const { return output_shape()[output_shape().rank() - 1]; }
  int64_t rows(const LayerContext& ctx) const { return ctx.rows * (output_shape().count() / cols()); }

  Activation act_;
  std::string type_, default_name_;
};

}  // namespace

LayerPtr layers::Activation(mirror::Activation activation, std::string name) {
  return std::make_shared<ActivationLayer>(activation, "Activation", "activation", std::move(name));
}

LayerPtr layers::ReLU(std::string name) {
  return std::make_shared<ActivationLayer>(mirror::Activation::ReLU, "ReLU", "re_lu", std::move(name));
}

}  // namespace mirror
