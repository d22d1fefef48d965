// BatchNormalization over the last axis, Keras's semantics: batch moments in training (biased
// variance), moving statistics in inference, moving = moving * momentum + batch * (1 - momentum).
// With `synchronized` the moments are those of the global batch: each replica sums its share
// (shifted by the moving mean, the same on every replica, against cancellation), the sums are
// all-reduced, and backward all-reduces its two per-channel sums the same way.
#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/layers/config_util.hpp"

namespace mirror {
namespace {

class BatchNormalizationLayer final : public Layer {
 public:
  explicit BatchNormalizationLayer(const layers::BatchNormalizationOptions& o) : Layer(std::nullopt, o.name), o_(o) {
    MIRROR_REQUIRE(o.momentum >= 0 && o.momentum <= 1, InvalidArgument, "BatchNormalization momentum must be in [0, 1], got ", o.momentum);
    MIRROR_REQUIRE(o.epsilon > 0, InvalidArgument, "BatchNormalization epsilon must be positive, got ", o.epsilon);
  }

  std::string type() const override { return "BatchNormalization"; }
  std::string default_name() const override { return "batch_normalization"; }

  std::vector<std::pair<std::string, std::string>> config() const override {
    using namespace layer_util;
    return {{"axis", "-1"}, {"momentum", json_number(o_.momentum)}, {"epsilon", json_number(o_.epsilon)},
            {"center", json_bool(o_.center)}, {"scale", json_bool(o_.scale)}, {"synchronized", json_bool(o_.synchronized)}};
  }

  std::vector<VariableSpec> variables() const override {
    const Shape c{channels_};
    std::vector<VariableSpec> v;
    if (o_.scale) v.push_back({"gamma", c, Initializer::Ones, true});
    if (o_.center) v.push_back({"beta", c, Initializer::Zeros, true});
    v.push_back({"moving_mean", c, Initializer::Zeros, false});
    v.push_back({"moving_variance", c, Initializer::Ones, false});
    return v;
  }

  // Per channel: mean, var, invstd of the batch; forward sums (2); backward sums (2); the global
  // moments for the moving update (mean, var, invstd).
  size_t scratch_floats(int64_t) const override { return static_cast<size_t>(11 * channels_); }

  void forward(const ForwardArgs& a) override {
    const LayerContext& ctx = a.ctx;
    Backend& b = ctx.backend;
    const int64_t rows = ctx.rows * pixels_;
    const Vars v = vars(a.vars);
    const Scratch s = scratch(a.scratch);
    if (!ctx.training) {
      b.batch_norm_invstd(channels_, o_.epsilon, v.moving_var, s.invstd);
      b.batch_norm_forward(rows, channels_, a.inputs[0], v.moving_mean, s.invstd, v.gamma, v.beta, a.output);
      return;
    }
    sums(b, rows, a.inputs[0], v.moving_mean, s.sums);
    double count = static_cast<double>(rows);
    if (o_.synchronized) {
      ctx.replica.all_reduce_sum({s.sums, static_cast<size_t>(2 * channels_)}, "synchronized batch normalization");
      count = static_cast<double>(ctx.global_rows * pixels_);
    }
    if (count > 0) b.batch_norm_moments(channels_, count, o_.epsilon, v.moving_mean, s.sums, s.mean, s.var, s.invstd);
    b.batch_norm_forward(rows, channels_, a.inputs[0], s.mean, s.invstd, v.gamma, v.beta, a.output);
  }

  void backward(const BackwardArgs& a) override {
    const LayerContext& ctx = a.ctx;
    Backend& b = ctx.backend;
    const int64_t rows = ctx.rows * pixels_;
    const Vars v = vars(a.vars);
    const Scratch s = scratch(a.scratch);
    const size_t c = static_cast<size_t>(channels_);
    if (rows > 0) {
      b.batch_norm_backward_sums(rows, channels_, a.inputs[0], a.dy, s.mean, s.invstd, s.backward_sums);
    } else {
      b.fill(s.backward_sums, 2 * c, 0.0f);
    }
    // This replica's sums are its gradients of beta and gamma (the gradient all-reduce adds the rest).
    size_t g = 0;
    if (o_.scale) b.copy(s.backward_sums + c, a.grads[g++], c);
    if (o_.center) b.copy(s.backward_sums, a.grads[g++], c);
    if (!a.dx[0]) return;
    double count = static_cast<double>(rows);
    if (o_.synchronized) {
      ctx.replica.all_reduce_sum({s.backward_sums, 2 * c}, "synchronized batch normalization backward");
      count = static_cast<double>(ctx.global_rows * pixels_);
    }
    b.batch_norm_backward_data(rows, channels_, a.inputs[0], a.dy, s.mean, s.invstd, v.gamma, s.backward_sums, count, a.dx[0]);
  }

  void update_state(const ForwardArgs& a) override {
    const LayerContext& ctx = a.ctx;
    Backend& b = ctx.backend;
    const Vars v = vars(a.vars);
    const Scratch s = scratch(a.scratch);
    const double count = static_cast<double>(ctx.global_rows * pixels_);
    if (count <= 0) return;
    const float* mean = s.mean;
    const float* var = s.var;
    if (!o_.synchronized && ctx.replica.num_replicas() > 1) {
      // Each replica normalized over its own share; the moving statistics take the global batch's
      // moments, so every replica keeps the same ones (and the same as with one replica).
      ctx.replica.all_reduce_sum({s.sums, static_cast<size_t>(2 * channels_)}, "batch normalization moving statistics");
      b.batch_norm_moments(channels_, count, o_.epsilon, v.moving_mean, s.sums, s.global_mean, s.global_var, s.global_invstd);
      mean = s.global_mean;
      var = s.global_var;
    }
    b.batch_norm_update_moving(channels_, o_.momentum, mean, var, ctx.guard, v.moving_mean, v.moving_var);
  }

 protected:
  Shape compute_output_shape(std::span<const Shape> inputs) override {
    const Shape& in = inputs[0];
    MIRROR_REQUIRE(in.rank() >= 1, InvalidArgument, "layer '", name(), "' (BatchNormalization) needs inputs with a channel axis");
    channels_ = in[in.rank() - 1];
    pixels_ = in.count() / channels_;
    return in;
  }

 private:
  struct Vars {
    const float *gamma, *beta;
    float *moving_mean, *moving_var;
  };
  struct Scratch {
    float *mean, *var, *invstd, *sums, *backward_sums, *global_mean, *global_var, *global_invstd;
  };

  Vars vars(std::span<float* const> v) const {
    size_t k = 0;
    Vars r{};
    r.gamma = o_.scale ? v[k++] : nullptr;
    r.beta = o_.center ? v[k++] : nullptr;
    r.moving_mean = v[k++];
    r.moving_var = v[k++];
    return r;
  }

  Scratch scratch(float* base) const {
    const int64_t c = channels_;
    return {base, base + c, base + 2 * c, base + 3 * c, base + 5 * c, base + 7 * c, base + 8 * c, base + 9 * c};
  }

  // sums over this share, zero for an empty one (ops do nothing on no rows).
  void sums(Backend& b, int64_t rows, const float* x, const float* shift, float* out) const {
    if (rows > 0) {
      b.batch_norm_sums(rows, channels_, x, shift, out);
    } else {
      b.fill(out, static_cast<size_t>(2 * channels_), 0.0f);
    }
  }

  layers::BatchNormalizationOptions o_;
  int64_t channels_ = 0, pixels_ = 0;  // per sample: channels, and positions per channel
};

}  // namespace

LayerPtr layers::BatchNormalization(const BatchNormalizationOptions& options) {
  return std::make_shared<BatchNormalizationLayer>(options);
}

}  // namespace mirror
