// Dense: y = act(x kernel + bias) on the replica's backend.
#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/layers/config_util.hpp"
#include "mirror/model/layers/activation_util.hpp"

namespace mirror {
namespace {

class DenseLayer final : public Layer {
 public:
  DenseLayer(int64_t units, const layers::DenseOptions& o) : Layer(o.input_shape, o.name), units_(units), options_(o) {
    MIRROR_REQUIRE(units > 0, InvalidArgument, "Dense needs units > 0, got ", units);
  }

  std::string type() const override { return "Dense"; }
  std::string default_name() const override { return "dense"; }
  Activation activation() const override { return options_.activation; }

  std::vector<std::pair<std::string, std::string>> config() const override {
    using namespace layer_util;
    return {{"units", std::to_string(units_)}, {"activation", json_string(to_string(options_.activation))},
            {"use_bias", json_bool(options_.use_bias)},
            {"kernel_initializer", json_string(to_string(options_.kernel_initializer))}};
  }

  std::vector<VariableSpec> variables() const override {
    std::vector<VariableSpec> v{{"kernel", Shape{inputs_, units_}, options_.kernel_initializer, true, inputs_, units_}};
    if (options_.use_bias) v.push_back({"bias", Shape{units_}, Initializer::Zeros, true, 0, 0});
    return v;
  }

  size_t scratch_floats(int64_t rows) const override {
    return static_cast<size_t>(rows) * layer_util::activation_scratch(options_.activation, units_);
  }

  void forward(const ForwardArgs& a) override {
    float* pre = layer_util::pre_activation(options_.activation, a.output, a.scratch);
    a.ctx.backend.dense_forward(a.ctx.rows, inputs_, units_, a.inputs[0], a.vars[0], options_.use_bias ? a.vars[1] : nullptr, pre);
    layer_util::activation_forward(a.ctx, options_.activation, a.ctx.rows, units_, pre, a.output);
  }

  void backward(const BackwardArgs& a) override {
    layer_util::activation_backward(a, options_.activation, a.ctx.rows, units_);
    a.ctx.backend.dense_backward(a.ctx.rows, inputs_, units_, a.inputs[0], a.vars[0], a.dy, a.dx[0], a.grads[0],
                                 options_.use_bias ? a.grads[1] : nullptr);
  }

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override {
    const Shape& in = inputs[0];
    MIRROR_REQUIRE(in.rank() == 1, InvalidArgument, "layer '", name(), "' (Dense) expects flat inputs, got ", in,
                   "; add layers::Flatten() before it");
    inputs_ = in[0];
    return Shape{units_};
  }

 private:
  int64_t units_;
  int64_t inputs_ = 0;
  layers::DenseOptions options_;
};

}  // namespace

LayerPtr layers::Dense(int64_t units, const DenseOptions& options) { return std::make_shared<DenseLayer>(units, options); }

LayerPtr layers::Dense(int64_t units, mirror::Activation activation, std::optional<Shape> input_shape) {
  return Dense(units, DenseOptions{.activation = activation, .input_shape = std::move(input_shape)});
}

}  // namespace mirror
