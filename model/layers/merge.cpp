// Add and Concatenate: the layers that join branches (residual connections, multi-branch
// blocks). Both take their gradients' accumulation into their own hands (accumulates_dx), so a
// tensor that feeds a branch and a shortcut costs no extra pass.
#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/layers/config_util.hpp"

namespace mirror {
namespace {

class AddLayer final : public Layer {
 public:
  explicit AddLayer(std::string name) : Layer(std::nullopt, std::move(name)) {}

  std::string type() const override { return "Add"; }
  std::string default_name() const override { return "add"; }
  int input_count() const override { return kAnyInputs; }
  bool accumulates_dx() const override { return true; }

  void forward(const ForwardArgs& a) override {
    const size_t count = static_cast<size_t>(a.ctx.rows * output_shape().count());
    a.ctx.backend.add(count, a.inputs[0], a.inputs[1], a.output);
    for (size_t i = 2; i < a.inputs.size(); ++i) a.ctx.backend.add(count, a.output, a.inputs[i], a.output);
  }

  void backward(const BackwardArgs& a) override {
    const size_t count = static_cast<size_t>(a.ctx.rows * output_shape().count());
    for (size_t i = 0; i < a.dx.size(); ++i) {
      if (!a.dx[i]) continue;
      if (a.accumulate[i]) {
        a.ctx.backend.add(count, a.dx[i], a.dy, a.dx[i]);
      } else {
        a.ctx.backend.copy(a.dy, a.dx[i], count);
      }
    }
  }

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override {
    for (const Shape& s : inputs)
      MIRROR_REQUIRE(s == inputs[0], InvalidArgument, "layer '", name(), "' (Add) needs inputs of one shape, got ", inputs[0],
                     " and ", s);
    return inputs[0];
  }
};

class ConcatenateLayer final : public Layer {
 public:
  explicit ConcatenateLayer(std::string name) : Layer(std::nullopt, std::move(name)) {}

  std::string type() const override { return "Concatenate"; }
  std::string default_name() const override { return "concatenate"; }

  std::vector<std::pair<std::string, std::string>> config() const override { return {{"axis", "-1"}}; }
  int input_count() const override { return kAnyInputs; }
  bool accumulates_dx() const override { return true; }

  void forward(const ForwardArgs& a) override {
    const int64_t total = output_shape()[output_shape().rank() - 1];
    int64_t offset = 0;
    for (size_t i = 0; i < a.inputs.size(); ++i) {
      const int64_t width = width_of(i);
      a.ctx.backend.copy_columns(positions(a.ctx), width, a.inputs[i], width, a.output + offset, total, false);
      offset += width;
    }
  }

  void backward(const BackwardArgs& a) override {
    const int64_t total = output_shape()[output_shape().rank() - 1];
    int64_t offset = 0;
    for (size_t i = 0; i < a.dx.size(); ++i) {
      const int64_t width = width_of(i);
      if (a.dx[i]) a.ctx.backend.copy_columns(positions(a.ctx), width, a.dy + offset, total, a.dx[i], width, a.accumulate[i]);
      offset += width;
    }
  }

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override {
    const int rank = inputs[0].rank();
    std::vector<int64_t> dims = inputs[0].dims();
    dims.back() = 0;
    for (const Shape& s : inputs) {
      bool same = s.rank() == rank;
      for (int d = 0; same && d + 1 < rank; ++d) same = s[d] == inputs[0][d];
      MIRROR_REQUIRE(same, InvalidArgument, "layer '", name(), "' (Concatenate) joins along the last axis; the other ",
                     "dimensions must agree, got ", inputs[0], " and ", s);
      dims.back() += s[rank - 1];
    }
    return Shape(dims);
  }

 private:
  int64_t width_of(size_t i) const { return input_shapes()[i][input_shapes()[i].rank() - 1]; }
  // Rows of the copies: every position before the last axis, for every sample.
  int64_t positions(const LayerContext& ctx) const {
    return ctx.rows * (output_shape().count() / output_shape()[output_shape().rank() - 1]);
  }
};

}  // namespace

LayerPtr layers::Add(std::string name) { return std::make_shared<AddLayer>(std::move(name)); }
LayerPtr layers::Concatenate(std::string name) { return std::make_shared<ConcatenateLayer>(std::move(name)); }

}  // namespace mirror
