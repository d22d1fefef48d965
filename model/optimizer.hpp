// Optimizers: Keras 3's update rules, defaults and names (SGD, Adam, AdamW, RMSprop), with its
// gradient clipping (clipnorm, clipvalue, global_clipnorm), decoupled weight decay and learning-rate
// schedules. The update is one fused pass over a replica's flat parameter buffer; every replica
// applies the same update to the same all-reduced gradient, so the replicas stay identical.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mirror/engine/backend.hpp"
#include "mirror/model/schedules.hpp"

namespace mirror {

// What one replica's update works on (device pointers of its backend).
struct OptimizerBuffers {
  size_t count = 0;              // floats of the flat trainable buffer
  float* params = nullptr;
  const float* grads = nullptr;  // the all-reduced gradient; read only
  float* slots = nullptr;        // slot_count() buffers of `count` floats
  const float* guard = nullptr;  // the running loss total: the update is skipped when it is not finite
  ParameterSegments segments = {};  // the variables' bounds and, when decay_factors() asked for them, decay factors
  float* scales = nullptr;       // segments.count floats of scratch when clips_by_norm()
};

// The options every Keras 3 optimizer takes. At most one of clipnorm, clipvalue and
// global_clipnorm may be set (0 = unset), as in Keras.
struct OptimizerCommon {
  float weight_decay = 0.0f;  // decoupled: p -= lr * weight_decay * p before each update
  float clipnorm = 0.0f;      // each variable's gradient scaled to an L2 norm of at most this
  float clipvalue = 0.0f;     // each gradient element clamped to [-clipvalue, clipvalue]
  float global_clipnorm = 0.0f;  // the whole gradient scaled to an L2 norm of at most this
  // Variables whose name (Keras's variable.name: "bias", "gamma", ...) matches one of these regular
  // expressions (std::regex_search) are not decayed.
  std::vector<std::string> exclude_from_weight_decay = {};
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;
  // Extra buffers of the parameters' size that the optimizer keeps (Adam: m and v).
  int slot_count() const { return optimizer_slot_count(rule(0, 1.0f)); }

  // The learning rate of update `iteration`: the schedule's, or the fixed value.
  float learning_rate(int64_t iteration) const;
  bool has_schedule() const { return learning_rate_.schedule != nullptr; }
  // Sets the fixed learning rate (callbacks do). Throws InvalidArgument when the rate is a schedule,
  // as Keras does.
  void set_learning_rate(float value);

  const OptimizerCommon& common() const { return common_; }
  bool clips_by_norm() const { return common_.clipnorm > 0 || common_.global_clipnorm > 0; }
  // Per-variable weight-decay factors (1 decayed, 0 excluded) for the variables named `names`; empty
  // when every variable is decayed alike (or none is).
  std::vector<float> decay_factors(std::span<const std::string> names) const;

  // Applies update number `iteration` (0-based) at `learning_rate` on one replica: the clipping
  // factors (from the all-reduced gradient, so the same on every replica), then the update.
  void apply(Backend& backend, int64_t iteration, float learning_rate, const OptimizerBuffers& buffers) const;

 protected:
  Optimizer(const std::string& who, LearningRate learning_rate, OptimizerCommon common);
  // The rule's constants for update `iteration` at `learning_rate` (clipping and decay are added).
  virtual OptimizerStep rule(int64_t iteration, float learning_rate) const = 0;

 private:
  LearningRate learning_rate_;
  OptimizerCommon common_;
};

using OptimizerPtr = std::shared_ptr<Optimizer>;

namespace optimizers {

struct SGDOptions {
  LearningRate learning_rate = 0.01f;
  float momentum = 0.0f;
  bool nesterov = false;
  OptimizerCommon common = {};
};

struct AdamOptions {
  LearningRate learning_rate = 0.001f;
  float beta_1 = 0.9f;
  float beta_2 = 0.999f;
  float epsilon = 1e-7f;
  bool amsgrad = false;
  OptimizerCommon common = {};
};

// Adam with decoupled weight decay (Keras 3's AdamW: weight_decay 0.004 unless given).
struct AdamWOptions {
  LearningRate learning_rate = 0.001f;
  float weight_decay = 0.004f;
  float beta_1 = 0.9f;
  float beta_2 = 0.999f;
  float epsilon = 1e-7f;
  bool amsgrad = false;
  OptimizerCommon common = {};  // its weight_decay is ignored: the field above is AdamW's
};

struct RMSpropOptions {
  LearningRate learning_rate = 0.001f;
  float rho = 0.9f;
  float momentum = 0.0f;
  float epsilon = 1e-7f;
  bool centered = false;
  OptimizerCommon common = {};
};

OptimizerPtr SGD(const SGDOptions& options = {});
OptimizerPtr Adam(const AdamOptions& options = {});
OptimizerPtr AdamW(const AdamWOptions& options = {});
OptimizerPtr RMSprop(const RMSpropOptions& options = {});

}  // namespace optimizers
}  // namespace mirror
