// Conv2D: convolution + optional bias + activation on the replica's backend.
#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/layers/config_util.hpp"
#include "mirror/model/layers/activation_util.hpp"

namespace mirror {
namespace {

class Conv2DLayer final : public Layer {
 public:
  Conv2DLayer(int64_t filters, layers::Size2 kernel, const layers::Conv2DOptions& o)
      : Layer(o.input_shape, o.name), filters_(filters), kernel_(kernel), options_(o) {
    MIRROR_REQUIRE(filters > 0, InvalidArgument, "Conv2D needs filters > 0, got ", filters);
    MIRROR_REQUIRE(kernel[0] > 0 && kernel[1] > 0, InvalidArgument, "Conv2D kernel size must be positive");
    MIRROR_REQUIRE(o.strides[0] > 0 && o.strides[1] > 0, InvalidArgument, "Conv2D strides must be positive");
  }

  std::string type() const override { return "Conv2D"; }
  std::string default_name() const override { return "conv2d"; }
  Activation activation() const override { return options_.activation; }

  std::vector<std::pair<std::string, std::string>> config() const override {
    using namespace layer_util;
    return {{"filters", std::to_string(filters_)}, {"kernel_size", json_list(kernel_)},
            {"strides", json_list(options_.strides)}, {"padding", json_padding(options_.padding)},
            {"activation", json_string(to_string(options_.activation))}, {"use_bias", json_bool(options_.use_bias)},
            {"kernel_initializer", json_string(to_string(options_.kernel_initializer))}};
  }

  std::vector<VariableSpec> variables() const override {
    const int64_t taps = kernel_[0] * kernel_[1];
    std::vector<VariableSpec> v{{"kernel", Shape{kernel_[0], kernel_[1], geometry_.in_c, filters_},
                                 options_.kernel_initializer, true, taps * geometry_.in_c, taps * filters_}};
    if (options_.use_bias) v.push_back({"bias", Shape{filters_}, Initializer::Zeros, true, 0, 0});
    return v;
  }

  size_t scratch_floats(int64_t rows) const override {
    return static_cast<size_t>(rows) * layer_util::activation_scratch(options_.activation, output_shape().count());
  }

  const ConvGeometry* poolable_conv() const override {
    const bool plain = options_.activation == Activation::ReLU || options_.activation == Activation::Linear;
    return plain ? &geometry_ : nullptr;
  }

  void forward(const ForwardArgs& a) override {
    const ConvGeometry g = with_batch(a.ctx.rows);
    const float* bias = options_.use_bias ? a.vars[1] : nullptr;
    if (a.fusion.pools) {
      a.ctx.backend.conv2d_max_pool_forward(g, pool_with_batch(a.fusion, a.ctx.rows), options_.activation == Activation::ReLU,
                                            a.inputs[0], a.vars[0], bias, a.output, argmax(a.scratch, a.ctx.rows));
      return;
    }
    if (options_.activation == Activation::ReLU) {
      a.ctx.backend.conv2d_relu_forward(g, a.inputs[0], a.vars[0], bias, a.output);
      return;
    }
    float* pre = layer_util::pre_activation(options_.activation, a.output, a.scratch);
    a.ctx.backend.conv2d_forward(g, a.inputs[0], a.vars[0], bias, pre);
    layer_util::activation_forward(a.ctx, options_.activation, a.ctx.rows * g.out_h() * g.out_w(), filters_, pre, a.output);
  }

  void backward(const BackwardArgs& a) override {
    const ConvGeometry g = with_batch(a.ctx.rows);
    if (a.fusion.pools) {
      // dy is the pooled output's gradient; the argmax forward kept routes it.
      a.ctx.backend.conv2d_max_pool_backward(g, pool_with_batch(a.fusion, a.ctx.rows), a.inputs[0], a.vars[0], a.dy,
                                             argmax(a.scratch, a.ctx.rows), a.grads[0],
                                             options_.use_bias ? a.grads[1] : nullptr, a.dx[0]);
      return;
    }
    layer_util::activation_backward(a, options_.activation, a.ctx.rows * g.out_h() * g.out_w(), filters_);
    a.ctx.backend.conv2d_backward_weights(g, a.inputs[0], a.dy, a.grads[0], options_.use_bias ? a.grads[1] : nullptr);
    if (a.dx[0]) a.ctx.backend.conv2d_backward_data(g, a.vars[0], a.dy, a.dx[0]);
  }

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override {
    const Shape& in = inputs[0];
    MIRROR_REQUIRE(in.rank() == 3, InvalidArgument, "layer '", name(), "' (Conv2D) expects inputs of shape (height, width, channels), got ", in);
    const PadPair ph = padding_for(options_.padding, in[0], kernel_[0], options_.strides[0]);
    const PadPair pw = padding_for(options_.padding, in[1], kernel_[1], options_.strides[1]);
    MIRROR_REQUIRE(in[0] + ph.before + ph.after >= kernel_[0] && in[1] + pw.before + pw.after >= kernel_[1], InvalidArgument,
                   "layer '", name(), "' (Conv2D): a ", kernel_[0], "x", kernel_[1], " kernel does not fit an input of ", in,
                   " with \"valid\" padding");
    geometry_ = {0, in[0], in[1], in[2], filters_, kernel_[0], kernel_[1], options_.strides[0], options_.strides[1],
                 ph.before, pw.before, ph.after, pw.after};
    return Shape{geometry_.out_h(), geometry_.out_w(), filters_};
  }

 private:
  static PoolGeometry pool_with_batch(const Fusion& fusion, int64_t rows) {
    PoolGeometry p = fusion.pool;
    p.batch = rows;
    return p;
  }
  // The fused op's argmax bytes: after this layer's own scratch (see ForwardArgs::scratch).
  uint8_t* argmax(float* scratch, int64_t rows) const {
    return reinterpret_cast<uint8_t*>(scratch + scratch_floats(rows));
  }

  ConvGeometry with_batch(int64_t rows) const {
    ConvGeometry g = geometry_;
    g.batch = rows;
    return g;
  }

  int64_t filters_;
  layers::Size2 kernel_;
  layers::Conv2DOptions options_;
  ConvGeometry geometry_;
};

}  // namespace

LayerPtr layers::Conv2D(int64_t filters, Size2 kernel_size, const Conv2DOptions& options) {
  return std::make_shared<Conv2DLayer>(filters, kernel_size, options);
}

LayerPtr layers::Conv2D(int64_t filters, Size2 kernel_size, mirror::Activation activation, std::optional<Shape> input_shape,
                        Size2 strides) {
  return Conv2D(filters, kernel_size, {.strides = strides, .activation = activation, .input_shape = std::move(input_shape)});
}

}  // namespace mirror
