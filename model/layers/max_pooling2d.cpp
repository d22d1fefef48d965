// MaxPooling2D: "valid" max pooling on the replica's backend.
#include "engine/error.hpp"
#include "model/layers.hpp"

namespace mirror {
namespace {

class MaxPooling2DLayer final : public Layer {
 public:
  MaxPooling2DLayer(std::array<int64_t, 2> pool, std::array<int64_t, 2> strides) : pool_(pool), strides_(strides) {
    MIRROR_REQUIRE(pool[0] > 0 && pool[1] > 0, InvalidArgument, "MaxPooling2D pool size must be positive");
    MIRROR_REQUIRE(strides[0] > 0 && strides[1] > 0, InvalidArgument, "MaxPooling2D strides must be positive");
  }

  std::string type() const override { return "MaxPooling2D"; }
  std::string default_name() const override { return "max_pooling2d"; }

  Shape build(const Shape& in) override {
    MIRROR_REQUIRE(in.rank() == 3, InvalidArgument, "layer '", name(), "' (MaxPooling2D) expects inputs of shape (height, width, channels), got ", in);
    MIRROR_REQUIRE(in[0] >= pool_[0] && in[1] >= pool_[1], InvalidArgument, "layer '", name(), "' (MaxPooling2D): a ",
                   pool_[0], "x", pool_[1], " window does not fit an input of ", in);
    geometry_ = {0, in[0], in[1], in[2], pool_[0], pool_[1], strides_[0], strides_[1]};
    const Shape out{geometry_.out_h(), geometry_.out_w(), in[2]};
    set_shapes(in, out);
    return out;
  }

  void forward(const LayerArgs& a, const float* x, float* y) override {
    a.backend.max_pool_forward(with_batch(a.rows), x, y);
  }

  bool absorbs_input_relu() const override { return true; }

  void backward(const LayerArgs& a, const float* x, const float* y, float* dy, float* dx, BackwardFlags flags) override {
    if (!dx) return;
    if (flags.input_is_relu) {
      a.backend.max_pool_relu_backward(with_batch(a.rows), x, y, dy, dx);
    } else {
      a.backend.max_pool_backward(with_batch(a.rows), x, y, dy, dx);
    }
  }

 private:
  PoolGeometry with_batch(int64_t rows) const {
    PoolGeometry g = geometry_;
    g.batch = rows;
    return g;
  }

  std::array<int64_t, 2> pool_, strides_;
  PoolGeometry geometry_;
};

}  // namespace

LayerPtr layers::MaxPooling2D(std::array<int64_t, 2> pool_size, std::optional<std::array<int64_t, 2>> strides) {
  return std::make_shared<MaxPooling2DLayer>(pool_size, strides.value_or(pool_size));
}

}  // namespace mirror
