// ZeroPadding2D: the image inside a frame of zeros. Forward zeroes the output and copies each
// sample's rows into place; backward copies the inner rows of the gradient back out.
#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/layers/config_util.hpp"

namespace mirror {
namespace {

class ZeroPadding2DLayer final : public Layer {
 public:
  ZeroPadding2DLayer(std::array<PadPair, 2> padding, std::string name) : Layer(std::nullopt, std::move(name)), pad_(padding) {
    for (const PadPair& p : padding)
      MIRROR_REQUIRE(p.before >= 0 && p.after >= 0, InvalidArgument, "ZeroPadding2D needs padding >= 0");
  }

  std::string type() const override { return "ZeroPadding2D"; }
  std::string default_name() const override { return "zero_padding2d"; }
  bool accumulates_dx() const override { return true; }

  std::vector<std::pair<std::string, std::string>> config() const override {
    return {{"padding", str("[[", pad_[0].before, ", ", pad_[0].after, "], [", pad_[1].before, ", ", pad_[1].after, "]]")}};
  }

  void forward(const ForwardArgs& a) override {
    Backend& b = a.ctx.backend;
    b.fill(a.output, static_cast<size_t>(a.ctx.rows * output_shape().count()), 0.0f);
    for (int64_t n = 0; n < a.ctx.rows; ++n)
      b.copy_columns(h_, row_, a.inputs[0] + n * input_shape().count(), row_, a.output + inner(n), padded_row_, false);
  }

  void backward(const BackwardArgs& a) override {
    if (!a.dx[0]) return;
    for (int64_t n = 0; n < a.ctx.rows; ++n)
      a.ctx.backend.copy_columns(h_, row_, a.dy + inner(n), padded_row_, a.dx[0] + n * input_shape().count(), row_,
                                 a.accumulate[0]);
  }

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override {
    const Shape& in = inputs[0];
    MIRROR_REQUIRE(in.rank() == 3, InvalidArgument, "layer '", name(), "' (ZeroPadding2D) expects inputs of shape (height, width, channels), got ", in);
    h_ = in[0];
    row_ = in[1] * in[2];
    const Shape out{in[0] + pad_[0].before + pad_[0].after, in[1] + pad_[1].before + pad_[1].after, in[2]};
    padded_row_ = out[1] * out[2];
    first_ = (pad_[0].before * out[1] + pad_[1].before) * in[2];
    return out;
  }

 private:
  // Where sample n's first input pixel lands in the output.
  int64_t inner(int64_t n) const { return n * output_shape().count() + first_; }

  std::array<PadPair, 2> pad_;
  int64_t h_ = 0, row_ = 0, padded_row_ = 0, first_ = 0;
};

}  // namespace

LayerPtr layers::ZeroPadding2D(std::array<PadPair, 2> padding, std::string name) {
  return std::make_shared<ZeroPadding2DLayer>(padding, std::move(name));
}

LayerPtr layers::ZeroPadding2D(int64_t padding, std::string name) {
  return ZeroPadding2D({PadPair{padding, padding}, PadPair{padding, padding}}, std::move(name));
}

}  // namespace mirror
