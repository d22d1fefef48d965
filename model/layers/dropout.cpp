// Dropout: Keras's inverted dropout in training, the identity in inference. The mask is drawn from
// (seed, step, node) for each element's global position, so it does not depend on the split.
#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/layers/config_util.hpp"

namespace mirror {
namespace {

class DropoutLayer final : public Layer {
 public:
  DropoutLayer(float rate, std::string name) : Layer(std::nullopt, std::move(name)), rate_(rate) {
    MIRROR_REQUIRE(rate >= 0.0f && rate < 1.0f, InvalidArgument, "Dropout rate must be in [0, 1), got ", rate);
  }

  std::string type() const override { return "Dropout"; }
  std::string default_name() const override { return "dropout"; }

  std::vector<std::pair<std::string, std::string>> config() const override {
    return {{"rate", layer_util::json_number(rate_)}};
  }

  void forward(const ForwardArgs& a) override {
    const int64_t cols = output_shape().count();
    if (!a.ctx.training || rate_ == 0.0f) {
      a.ctx.backend.copy(a.inputs[0], a.output, static_cast<size_t>(a.ctx.rows * cols));
      return;
    }
    a.ctx.backend.dropout_forward(spec(a.ctx), a.ctx.rows, cols, a.inputs[0], a.output);
  }

  void backward(const BackwardArgs& a) override {
    if (!a.dx[0]) return;
    const int64_t cols = output_shape().count();
    if (rate_ == 0.0f) {
      a.ctx.backend.copy(a.dy, a.dx[0], static_cast<size_t>(a.ctx.rows * cols));
      return;
    }
    a.ctx.backend.dropout_backward(spec(a.ctx), a.ctx.rows, cols, a.dy, a.dx[0]);
  }

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override { return inputs[0]; }

 private:
  DropoutSpec spec(const LayerContext& ctx) const {
    // One stream per (step, node): 2^20 nodes is more than any model has.
    return {.rate = rate_, .seed = ctx.seed, .stream = (static_cast<uint64_t>(ctx.iteration) << 20) | static_cast<uint64_t>(ctx.node),
            .first_row = ctx.first_row};
  }

  float rate_;
};

}  // namespace

LayerPtr layers::Dropout(float rate, std::string name) { return std::make_shared<DropoutLayer>(rate, std::move(name)); }

}  // namespace mirror
