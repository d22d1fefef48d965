// Flatten and Reshape: the same floats under another per-sample shape. NHWC is already Keras's
// flattened order, so no op runs: the output and its gradient share the input's memory.
#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/layers/config_util.hpp"

namespace mirror {
namespace {

class ReshapeLayer final : public Layer {
 public:
  ReshapeLayer(std::string type, std::string default_name, std::optional<Shape> target, std::optional<Shape> input,
               std::string name)
      : Layer(std::move(input), std::move(name)), type_(std::move(type)), default_name_(std::move(default_name)),
        target_(std::move(target)) {}

  std::string type() const override { return type_; }
  std::string default_name() const override { return default_name_; }
  bool is_reshape() const override { return true; }

  std::vector<std::pair<std::string, std::string>> config() const override {
    if (!target_) return {};
    return {{"target_shape", layer_util::json_list(target_->dims())}};
  }

  // The runtime passes the memory through (is_reshape); these never run.
  void forward(const ForwardArgs&) override {}
  void backward(const BackwardArgs&) override {}

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override {
    const int64_t count = inputs[0].count();
    if (!target_) return Shape{count};  // Flatten
    std::vector<int64_t> dims = target_->dims();
    int64_t known = 1, unknown = -1;
    for (size_t i = 0; i < dims.size(); ++i) {
      if (dims[i] == -1) {
        MIRROR_REQUIRE(unknown < 0, InvalidArgument, "layer '", name(), "' (Reshape): only one dimension of ", *target_, " may be -1");
        unknown = static_cast<int64_t>(i);
      } else {
        MIRROR_REQUIRE(dims[i] > 0, InvalidArgument, "layer '", name(), "' (Reshape): dimensions of ", *target_, " must be positive or -1");
        known *= dims[i];
      }
    }
    if (unknown >= 0 && known > 0 && count % known == 0) dims[static_cast<size_t>(unknown)] = count / known;
    const Shape out(dims);
    MIRROR_REQUIRE(out.count() == count, InvalidArgument, "layer '", name(), "' (Reshape) cannot turn ", inputs[0], " (", count,
                   " values) into ", *target_);
    return out;
  }

 private:
  std::string type_, default_name_;
  std::optional<Shape> target_;
};

}  // namespace

LayerPtr layers::Flatten(std::optional<Shape> input_shape) {
  return std::make_shared<ReshapeLayer>("Flatten", "flatten", std::nullopt, std::move(input_shape), "");
}

LayerPtr layers::Reshape(Shape target_shape, std::string name) {
  return std::make_shared<ReshapeLayer>("Reshape", "reshape", std::move(target_shape), std::nullopt, std::move(name));
}

}  // namespace mirror
