// Adam and SGD (Keras 3 rules; the element-wise math is engine/elementwise.hpp's).
#include <cmath>

#include "engine/error.hpp"
#include "model/optimizer.hpp"

namespace mirror {
namespace {

class AdamOptimizer final : public Optimizer {
 public:
  explicit AdamOptimizer(const optimizers::AdamOptions& o) : o_(o) {
    MIRROR_REQUIRE(o.learning_rate > 0 && std::isfinite(o.learning_rate), InvalidArgument,
                   "Adam's learning rate must be positive and finite, got ", o.learning_rate);
    MIRROR_REQUIRE(o.beta_1 >= 0 && o.beta_1 < 1 && o.beta_2 >= 0 && o.beta_2 < 1, InvalidArgument,
                   "Adam's beta_1 and beta_2 must be in [0, 1), got ", o.beta_1, " and ", o.beta_2);
    MIRROR_REQUIRE(o.epsilon > 0, InvalidArgument, "Adam's epsilon must be positive, got ", o.epsilon);
  }
  std::string name() const override { return "adam"; }
  int slot_count() const override { return 2; }

  void apply(Backend& backend, int64_t iteration, size_t count, float* params, const float* grads, float* slots,
             const float* guard) const override {
    // Keras 3: alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t), t = iteration + 1 (in double, so
    // the correction stays exact over long runs).
    const double t = static_cast<double>(iteration + 1);
    const double alpha = o_.learning_rate * std::sqrt(1.0 - std::pow(double{o_.beta_2}, t)) /
                         (1.0 - std::pow(double{o_.beta_1}, t));
    const AdamStep step{static_cast<float>(alpha), o_.beta_1, o_.beta_2, o_.epsilon};
    backend.adam_update(count, step, guard, params, grads, slots, slots + count);
  }

 private:
  optimizers::AdamOptions o_;
};

class SGDOptimizer final : public Optimizer {
 public:
  explicit SGDOptimizer(const optimizers::SGDOptions& o) : o_(o) {
    MIRROR_REQUIRE(o.learning_rate > 0 && std::isfinite(o.learning_rate), InvalidArgument,
                   "SGD's learning rate must be positive and finite, got ", o.learning_rate);
    MIRROR_REQUIRE(o.momentum >= 0 && o.momentum <= 1, InvalidArgument, "SGD's momentum must be in [0, 1], got ", o.momentum);
  }
  std::string name() const override { return "sgd"; }
  int slot_count() const override { return o_.momentum > 0 ? 1 : 0; }

  void apply(Backend& backend, int64_t, size_t count, float* params, const float* grads, float* slots,
             const float* guard) const override {
    backend.sgd_update(count, {o_.learning_rate, o_.momentum}, guard, params, grads, o_.momentum > 0 ? slots : nullptr);
  }

 private:
  optimizers::SGDOptions o_;
};

}  // namespace

OptimizerPtr optimizers::Adam(const AdamOptions& options) { return std::make_shared<AdamOptimizer>(options); }
OptimizerPtr optimizers::SGD(const SGDOptions& options) { return std::make_shared<SGDOptimizer>(options); }

}  // namespace mirror
