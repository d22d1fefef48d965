// MaxPooling2D, AveragePooling2D and GlobalAveragePooling2D on the replica's backend.
#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/layers/config_util.hpp"

namespace mirror {
namespace {

class Pooling2DLayer final : public Layer {
 public:
  Pooling2DLayer(bool max, layers::Size2 pool, const layers::PoolOptions& o)
      : Layer(std::nullopt, o.name), max_(max), pool_(pool), strides_(o.strides.value_or(pool)), padding_(o.padding) {
    MIRROR_REQUIRE(pool[0] > 0 && pool[1] > 0, InvalidArgument, type(), " pool size must be positive");
    MIRROR_REQUIRE(strides_[0] > 0 && strides_[1] > 0, InvalidArgument, type(), " strides must be positive");
  }

  std::string type() const override { return max_ ? "MaxPooling2D" : "AveragePooling2D"; }
  std::string default_name() const override { return max_ ? "max_pooling2d" : "average_pooling2d"; }
  bool absorbs_input_relu() const override { return max_; }
  const PoolGeometry* max_pool_geometry() const override { return max_ ? &geometry_ : nullptr; }

  std::vector<std::pair<std::string, std::string>> config() const override {
    using namespace layer_util;
    return {{"pool_size", json_list(pool_)}, {"strides", json_list(strides_)}, {"padding", json_padding(padding_)}};
  }

  // With Fusion::pooled_by_input the runtime calls neither pass: the convolution before it does both.
  void forward(const ForwardArgs& a) override {
    const PoolGeometry g = with_batch(a.ctx.rows);
    if (max_) {
      a.ctx.backend.max_pool_forward(g, a.inputs[0], a.output);
    } else {
      a.ctx.backend.avg_pool_forward(g, a.inputs[0], a.output);
    }
  }

  void backward(const BackwardArgs& a) override {
    if (!a.dx[0]) return;
    const PoolGeometry g = with_batch(a.ctx.rows);
    if (!max_) return a.ctx.backend.avg_pool_backward(g, a.dy, a.dx[0]);
    if (a.fusion.input_is_relu) return a.ctx.backend.max_pool_relu_backward(g, a.inputs[0], a.output, a.dy, a.dx[0]);
    a.ctx.backend.max_pool_backward(g, a.inputs[0], a.output, a.dy, a.dx[0]);
  }

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override {
    const Shape& in = inputs[0];
    MIRROR_REQUIRE(in.rank() == 3, InvalidArgument, "layer '", name(), "' (", type(),
                   ") expects inputs of shape (height, width, channels), got ", in);
    const PadPair ph = padding_for(padding_, in[0], pool_[0], strides_[0]);
    const PadPair pw = padding_for(padding_, in[1], pool_[1], strides_[1]);
    MIRROR_REQUIRE(in[0] + ph.before + ph.after >= pool_[0] && in[1] + pw.before + pw.after >= pool_[1], InvalidArgument,
                   "layer '", name(), "' (", type(), "): a ", pool_[0], "x", pool_[1], " window does not fit an input of ", in);
    geometry_ = {0, in[0], in[1], in[2], pool_[0], pool_[1], strides_[0], strides_[1], ph.before, pw.before, ph.after, pw.after};
    return Shape{geometry_.out_h(), geometry_.out_w(), in[2]};
  }

 private:
  PoolGeometry with_batch(int64_t rows) const {
    PoolGeometry g = geometry_;
    g.batch = rows;
    return g;
  }

  bool max_;
  layers::Size2 pool_, strides_;
  Padding padding_;
  PoolGeometry geometry_;
};

class GlobalAveragePooling2DLayer final : public Layer {
 public:
  explicit GlobalAveragePooling2DLayer(std::string name) : Layer(std::nullopt, std::move(name)) {}

  std::string type() const override { return "GlobalAveragePooling2D"; }
  std::string default_name() const override { return "global_average_pooling2d"; }

  void forward(const ForwardArgs& a) override {
    const Shape& in = input_shape();
    a.ctx.backend.global_avg_pool_forward(a.ctx.rows, in[0] * in[1], in[2], a.inputs[0], a.output);
  }

  void backward(const BackwardArgs& a) override {
    if (!a.dx[0]) return;
    const Shape& in = input_shape();
    a.ctx.backend.global_avg_pool_backward(a.ctx.rows, in[0] * in[1], in[2], a.dy, a.dx[0]);
  }

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override {
    MIRROR_REQUIRE(inputs[0].rank() == 3, InvalidArgument, "layer '", name(),
                   "' (GlobalAveragePooling2D) expects inputs of shape (height, width, channels), got ", inputs[0]);
    return Shape{inputs[0][2]};
  }
};

}  // namespace

LayerPtr layers::MaxPooling2D(Size2 pool_size, const PoolOptions& options) {
  return std::make_shared<Pooling2DLayer>(true, pool_size, options);
}

LayerPtr layers::MaxPooling2D(Size2 pool_size, std::optional<Size2> strides) {
  return MaxPooling2D(pool_size, PoolOptions{.strides = strides});
}

LayerPtr layers::AveragePooling2D(Size2 pool_size, const PoolOptions& options) {
  return std::make_shared<Pooling2DLayer>(false, pool_size, options);
}

LayerPtr layers::GlobalAveragePooling2D(std::string name) {
  return std::make_shared<GlobalAveragePooling2DLayer>(std::move(name));
}

}  // namespace mirror
