// Dense: y = act(x kernel + bias) on the replica's backend.
#include "engine/error.hpp"
#include "model/layers.hpp"

namespace mirror {
namespace {

class DenseLayer final : public Layer {
 public:
  DenseLayer(int64_t units, Activation act, std::optional<Shape> input)
      : Layer(std::move(input)), units_(units), activation_(act) {
    // The layer keeps only its output, from which these activations' derivatives cannot be taken.
    MIRROR_REQUIRE(!backward_needs_input(act), InvalidArgument, "Dense with activation '", to_string(act),
                   "' is not supported yet: its gradient needs the pre-activation values, which the layer does not keep");
    MIRROR_REQUIRE(units > 0, InvalidArgument, "Dense needs units > 0, got ", units);
  }

  std::string type() const override { return "Dense"; }
  std::string default_name() const override { return "dense"; }
  Activation activation() const override { return activation_; }

  Shape build(const Shape& in) override {
    MIRROR_REQUIRE(in.rank() == 1, InvalidArgument, "layer '", name(), "' (Dense) expects flat inputs, got ", in,
                   "; add layers::Flatten() before it");
    inputs_ = in[0];
    const Shape out{units_};
    set_shapes(in, out);
    return out;
  }

  std::vector<ParamSpec> param_specs() const override {
    return {{"kernel", Shape{inputs_, units_}, Initializer::GlorotUniform, inputs_, units_},
            {"bias", Shape{units_}, Initializer::Zeros, 0, 0}};
  }

  void forward(const LayerArgs& a, const float* x, float* y) override {
    a.backend.dense_forward(a.rows, inputs_, units_, x, a.params[0], a.params[1], y);
    a.backend.activation_forward(activation_, a.rows, units_, y, y);
  }

  void backward(const LayerArgs& a, const float* x, const float* y, float* dy, float* dx, BackwardFlags flags) override {
    if (!flags.activation_done) a.backend.activation_backward(activation_, a.rows, units_, nullptr, y, dy, dy);
    a.backend.dense_backward(a.rows, inputs_, units_, x, a.params[0], dy, dx, a.grads[0], a.grads[1]);
  }

 private:
  int64_t units_;
  int64_t inputs_ = 0;
  Activation activation_;
};

}  // namespace

LayerPtr layers::Dense(int64_t units, Activation activation, std::optional<Shape> input_shape) {
  return std::make_shared<DenseLayer>(units, activation, std::move(input_shape));
}

}  // namespace mirror
