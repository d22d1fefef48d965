// Conv2D: convolution + bias + activation on the replica's backend.
#include "engine/error.hpp"
#include "model/layers.hpp"

namespace mirror {
namespace {

class Conv2DLayer final : public Layer {
 public:
  Conv2DLayer(int64_t filters, std::array<int64_t, 2> kernel, Activation act, std::optional<Shape> input,
              std::array<int64_t, 2> strides)
      : Layer(std::move(input)), filters_(filters), kernel_(kernel), strides_(strides), activation_(act) {
    // The layer keeps only its output, from which these activations' derivatives cannot be taken.
    MIRROR_REQUIRE(!backward_needs_input(act), InvalidArgument, "Conv2D with activation '", to_string(act),
                   "' is not supported yet: its gradient needs the pre-activation values, which the layer does not keep");
    MIRROR_REQUIRE(filters > 0, InvalidArgument, "Conv2D needs filters > 0, got ", filters);
    MIRROR_REQUIRE(kernel[0] > 0 && kernel[1] > 0, InvalidArgument, "Conv2D kernel size must be positive");
    MIRROR_REQUIRE(strides[0] > 0 && strides[1] > 0, InvalidArgument, "Conv2D strides must be positive");
  }

  std::string type() const override { return "Conv2D"; }
  std::string default_name() const override { return "conv2d"; }
  Activation activation() const override { return activation_; }

  Shape build(const Shape& in) override {
    MIRROR_REQUIRE(in.rank() == 3, InvalidArgument, "layer '", name(), "' (Conv2D) expects inputs of shape (height, width, channels), got ", in);
    MIRROR_REQUIRE(in[0] >= kernel_[0] && in[1] >= kernel_[1], InvalidArgument, "layer '", name(), "' (Conv2D): a ",
                   kernel_[0], "x", kernel_[1], " kernel does not fit an input of ", in);
    geometry_ = {0, in[0], in[1], in[2], filters_, kernel_[0], kernel_[1], strides_[0], strides_[1]};
    const Shape out{geometry_.out_h(), geometry_.out_w(), filters_};
    set_shapes(in, out);
    return out;
  }

  std::vector<ParamSpec> param_specs() const override {
    const int64_t taps = kernel_[0] * kernel_[1];
    return {{"kernel", Shape{kernel_[0], kernel_[1], geometry_.in_c, filters_}, Initializer::GlorotUniform,
             taps * geometry_.in_c, taps * filters_},
            {"bias", Shape{filters_}, Initializer::Zeros, 0, 0}};
  }

  void forward(const LayerArgs& a, const float* x, float* y) override {
    const ConvGeometry g = with_batch(a.rows);
    if (activation_ == Activation::ReLU) {
      a.backend.conv2d_relu_forward(g, x, a.params[0], a.params[1], y);
    } else {
      a.backend.conv2d_forward(g, x, a.params[0], a.params[1], y);
      a.backend.activation_forward(activation_, a.rows * g.out_h() * g.out_w(), filters_, y, y);
    }
  }

  void backward(const LayerArgs& a, const float* x, const float* y, float* dy, float* dx, BackwardFlags flags) override {
    const ConvGeometry g = with_batch(a.rows);
    if (!flags.activation_done) a.backend.activation_backward(activation_, a.rows * g.out_h() * g.out_w(), filters_, nullptr, y, dy, dy);
    a.backend.conv2d_backward_weights(g, x, dy, a.grads[0], a.grads[1]);
    if (dx) a.backend.conv2d_backward_data(g, a.params[0], dy, dx);
  }

 private:
  ConvGeometry with_batch(int64_t rows) const {
    ConvGeometry g = geometry_;
    g.batch = rows;
    return g;
  }

  int64_t filters_;
  std::array<int64_t, 2> kernel_, strides_;
  Activation activation_;
  ConvGeometry geometry_;
};

}  // namespace

LayerPtr layers::Conv2D(int64_t filters, std::array<int64_t, 2> kernel_size, Activation activation,
                        std::optional<Shape> input_shape, std::array<int64_t, 2> strides) {
  return std::make_shared<Conv2DLayer>(filters, kernel_size, activation, std::move(input_shape), strides);
}

}  // namespace mirror
