// Layer: one operation of a model graph (Conv2D, BatchNormalization, Add, ...). A layer object
// describes the computation and owns no replica state: its variables live in each replica's flat
// buffers and reach it as views, and every call runs in a LayerContext that says which replica,
// which step, and whether it is training.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mirror/engine/activation.hpp"
#include "mirror/engine/backend.hpp"
#include "mirror/engine/shape.hpp"
#include "mirror/strategy/replica_context.hpp"

namespace mirror {

// Keras's initializers, by their Keras names (glorot_uniform, he_normal, ...).
enum class Initializer { Zeros, Ones, GlorotUniform, HeNormal, HeUniform };
std::string to_string(Initializer init);

// One variable of a layer. Trainable variables live in the replica's flat parameter buffer (their
// gradients are all-reduced and the optimizer updates them); the others (batch normalization's
// moving statistics) in a flat buffer of their own, broadcast and saved, never optimized.
struct VariableSpec {
  std::string name;  // Keras's: "kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"
  Shape shape;
  Initializer init = Initializer::Zeros;
  bool trainable = true;
  int64_t fan_in = 0, fan_out = 0;  // for the variance-scaling initializers
};

// Where and when a layer runs: one replica, one batch share, one step.
struct LayerContext {
  const ReplicaContext& replica;  // the replica's backend and the strategy's collectives
  Backend& backend;
  bool training = false;     // fit: true; evaluate / predict: false (Keras's `training` argument)
  int64_t rows = 0;          // samples in this replica's share; may be 0 (ops then do nothing,
                             // but a layer must still issue the collectives the others issue)
  int64_t global_rows = 0;   // samples in the global batch (all replicas)
  int64_t first_row = 0;     // index of the share's first sample in the global batch
  int64_t iteration = 0;     // optimizer steps taken before this one
  uint64_t seed = 0;         // the model's seed (compile's, or a checkpoint's): dropout masks
  int node = 0;              // the node's index in the graph: tells two layers' random streams apart
  const float* guard = nullptr;  // the running loss total on the device (see Backend::accumulate_stats):
                                 // updates of non-trainable variables skip when it is not finite
};

// Decisions of the fusion pass (model/plan.cpp) that change what a node's backward does.
struct Fusion {
  // dL/d(output) already is the gradient with respect to this layer's activation input: a
  // consumer (max pooling after a ReLU) or the loss (softmax with cross-entropy) applied the
  // activation's derivative, so the layer skips its activation backward.
  bool activation_done = false;
  // The input is a ReLU's output and this layer folds ReLU's derivative into dx (only where
  // absorbs_input_relu()).
  bool input_is_relu = false;
  // A convolution that runs the max pooling after it too (Backend::conv2d_max_pool_forward and
  // _backward, on backends that fuse the pair): its output is the pooled tensor, dy that
  // tensor's gradient, and `pool` the pooling's geometry (batch 0). Set with pooled_by_input
  // on the pooling.
  bool pools = false;
  PoolGeometry pool;
  // A max pooling the convolution before it runs: it runs no op, and its output and the output's
  // gradient are its input's memory (as a reshape's are).
  bool pooled_by_input = false;
};

struct ForwardArgs {
  const LayerContext& ctx;
  std::span<const float* const> inputs;  // per input: (rows, input shape)
  float* output;                         // (rows, output shape)
  std::span<float* const> vars;          // variables() in order
  float* scratch;                        // scratch_floats(rows) floats, kept until this step's backward
                                         // (then rows * argmax_floats_per_row() more when fusion.pools)
  Fusion fusion = {};
};

struct BackwardArgs {
  const LayerContext& ctx;
  std::span<const float* const> inputs;
  const float* output;
  float* dy;                         // dL/d(output); the layer may overwrite it
  std::span<float* const> dx;        // per input: where dL/d(input) goes, or null when nothing needs it
  std::span<const bool> accumulate;  // per input: add into dx instead of overwriting (only when
                                     // accumulates_dx(); otherwise always false)
  std::span<float* const> vars;      // variables() in order
  std::span<float* const> grads;     // per variable: its gradient (written, not accumulated), or
                                     // null for a non-trainable one
  float* scratch;
  Fusion fusion;
};

class Layer {
 public:
  virtual ~Layer() = default;

  virtual std::string type() const = 0;          // Keras's class name: "Conv2D"
  virtual std::string default_name() const = 0;  // Keras's name stem: "conv2d" (models add _1, _2, ...)
  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  bool has_explicit_name() const { return explicit_name_; }

  // Inputs the layer takes: 1, or kAnyInputs (two or more: Add, Concatenate).
  static constexpr int kAnyInputs = -1;
  virtual int input_count() const { return 1; }

  // The per-sample input shape given at construction (Keras's input_shape), if any.
  const std::optional<Shape>& declared_input_shape() const { return declared_input_; }

  // Fixes the per-sample input shapes; returns the per-sample output shape. Throws InvalidArgument
  // (naming the layer) when the inputs do not fit.
  Shape build(std::span<const Shape> inputs);
  bool built() const { return built_; }
  const std::vector<Shape>& input_shapes() const { return inputs_; }
  const Shape& input_shape() const { return inputs_.at(0); }
  const Shape& output_shape() const { return output_; }

  // Variables in Keras's order (get_weights, files). Valid once built.
  virtual std::vector<VariableSpec> variables() const { return {}; }
  // The activation applied at the end of forward (Keras's `activation=`), Linear if none.
  virtual Activation activation() const { return Activation::Linear; }
  // True when the output is the input reinterpreted (Flatten, Reshape): no op runs, the output and
  // its gradient share the input's memory.
  virtual bool is_reshape() const { return false; }
  // True when backward can fold the derivative of a ReLU that produced its input into dx.
  virtual bool absorbs_input_relu() const { return false; }
  // True when backward honours BackwardArgs::accumulate (adds into dx).
  virtual bool accumulates_dx() const { return false; }
  // For the fusion pass (model/plan.cpp): a convolution whose activation is ReLU or none gives its
  // geometry (batch 0), so that a max pooling after it can run with it as one op; a max pooling
  // gives its geometry. nullptr for every other layer.
  virtual const ConvGeometry* poolable_conv() const { return nullptr; }
  virtual const PoolGeometry* max_pool_geometry() const { return nullptr; }
  // Floats of scratch per row a convolution needs beyond scratch_floats() when it runs the pooling
  // after it (Fusion::pools): the argmax bytes of `pooled_floats` pooled elements.
  static size_t argmax_floats_per_row(int64_t pooled_floats) { return static_cast<size_t>((pooled_floats + 3) / 4); }
  // Floats of scratch this layer needs per call for `rows` samples.
  virtual size_t scratch_floats(int64_t /*rows*/) const { return 0; }

  virtual void forward(const ForwardArgs& args) = 0;
  // Writes the gradients of the trainable variables and, where dx[i] is not null, dL/d(input i).
  virtual void backward(const BackwardArgs& args) = 0;

  // After a training step whose statistics every replica now holds: update non-trainable state
  // from what forward kept in its scratch (batch normalization's moving statistics). `args.ctx.guard`
  // is the running loss total; the update must be skipped on the device when it is not finite.
  virtual void update_state(const ForwardArgs& /*args*/) {}

  // Keras's get_config() entries that differ by layer, each value as JSON text: ("filters", "32"),
  // ("padding", "\"same\""). model/saving/ writes them into Keras's config.json and rebuilds the layer
  // from them, so every argument that changes what the layer computes must be here.
  virtual std::vector<std::pair<std::string, std::string>> config() const { return {}; }

 protected:
  explicit Layer(std::optional<Shape> declared_input = std::nullopt, std::string name = "")
      : name_(std::move(name)), explicit_name_(!name_.empty()), declared_input_(std::move(declared_input)) {}
  // Checks the inputs and returns the output shape (called by build()).
  virtual Shape compute_output_shape(std::span<const Shape> inputs) = 0;

 private:
  std::string name_;
  bool explicit_name_ = false;
  std::optional<Shape> declared_input_;
  std::vector<Shape> inputs_;
  Shape output_;
  bool built_ = false;
};

}  // namespace mirror
