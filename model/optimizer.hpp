// Optimizers: Keras 3's update rules and defaults, applied in one fused pass over a replica's flat
// parameter buffer. Every replica applies the same update to the same summed gradient, so the
// replicas stay identical.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/backend.hpp"

namespace mirror {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;
  // Extra buffers of the parameters' size that the optimizer keeps (Adam: m and v).
  virtual int slot_count() const = 0;
  // Applies update number `iteration` (0-based) to `count` parameters. `slots` holds slot_count()
  // consecutive buffers of `count` floats. Skipped when guard[0] (the running loss total) is not finite.
  virtual void apply(Backend& backend, int64_t iteration, size_t count, float* params, const float* grads,
                     float* slots, const float* guard) const = 0;
};

using OptimizerPtr = std::shared_ptr<Optimizer>;

namespace optimizers {

struct AdamOptions {
  float learning_rate = 1e-3f;
  float beta_1 = 0.9f;
  float beta_2 = 0.999f;
  float epsilon = 1e-7f;
};

struct SGDOptions {
  float learning_rate = 0.01f;
  float momentum = 0.0f;
};

OptimizerPtr Adam(const AdamOptions& options = {});
OptimizerPtr SGD(const SGDOptions& options = {});

}  // namespace optimizers
}  // namespace mirror
