// SGD, Adam, AdamW and RMSprop (Keras 3 rules; the element-wise math is engine/elementwise.hpp's),
// and what every optimizer shares: the learning rate, clipping and decoupled weight decay.
#include <cmath>
#include <regex>

#include "mirror/engine/error.hpp"
#include "mirror/model/optimizer.hpp"

namespace mirror {
namespace {

void require_finite_positive(const std::string& who, const char* what, float value) {
  MIRROR_REQUIRE(value > 0 && std::isfinite(value), InvalidArgument, who, "'s ", what, " must be positive and finite, got ",
                 value);
}

void check_common(const std::string& who, const OptimizerCommon& c) {
  for (const auto& [what, value] : {std::pair{"weight_decay", c.weight_decay}, std::pair{"clipnorm", c.clipnorm},
                                    std::pair{"clipvalue", c.clipvalue}, std::pair{"global_clipnorm", c.global_clipnorm}})
    MIRROR_REQUIRE(value >= 0 && std::isfinite(value), InvalidArgument, who, "'s ", what,
                   " must be >= 0 and finite (0 = unset), got ", value);
  const int clips = (c.clipnorm > 0) + (c.clipvalue > 0) + (c.global_clipnorm > 0);
  MIRROR_REQUIRE(clips <= 1, InvalidArgument, who, ": only one of clipnorm, clipvalue and global_clipnorm can be set");
  for (const std::string& pattern : c.exclude_from_weight_decay) {
    try {
      std::regex{pattern};
    } catch (const std::regex_error& e) {
      throw InvalidArgument(str(who, "'s exclude_from_weight_decay pattern '", pattern, "' is not a regular expression: ",
                                e.what()));
    }
  }
}

class SGDOptimizer final : public Optimizer {
 public:
  explicit SGDOptimizer(const optimizers::SGDOptions& o) : Optimizer("SGD", o.learning_rate, o.common), o_(o) {
    MIRROR_REQUIRE(o.momentum >= 0 && o.momentum <= 1, InvalidArgument, "SGD's momentum must be in [0, 1], got ",
                   o.momentum);
  }
  std::string name() const override { return "sgd"; }

 protected:
  OptimizerStep rule(int64_t, float learning_rate) const override {
    return {.rule = OptimizerRule::SGD, .learning_rate = learning_rate, .momentum = o_.momentum, .nesterov = o_.nesterov};
  }

 private:
  optimizers::SGDOptions o_;
};

struct AdamConstants {
  float beta_1, beta_2, epsilon;
  bool amsgrad;
};

void check_adam(const std::string& who, const AdamConstants& c) {
  MIRROR_REQUIRE(c.beta_1 >= 0 && c.beta_1 < 1 && c.beta_2 >= 0 && c.beta_2 < 1, InvalidArgument, who,
                 "'s beta_1 and beta_2 must be in [0, 1), got ", c.beta_1, " and ", c.beta_2);
  require_finite_positive(who, "epsilon", c.epsilon);
}

class AdamOptimizer final : public Optimizer {
 public:
  AdamOptimizer(const std::string& who, LearningRate lr, OptimizerCommon common, const AdamConstants& c)
      : Optimizer(who, std::move(lr), std::move(common)), c_(c), name_(who == "AdamW" ? "adamw" : "adam") {
    check_adam(who, c);
  }
  std::string name() const override { return name_; }

 protected:
  OptimizerStep rule(int64_t iteration, float learning_rate) const override {
    // Keras 3: alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t), t = iteration + 1 (in double, so
    // the correction stays exact over long runs).
    const double t = static_cast<double>(iteration + 1);
    const double alpha = learning_rate * std::sqrt(1.0 - std::pow(double{c_.beta_2}, t)) /
                         (1.0 - std::pow(double{c_.beta_1}, t));
    return {.rule = OptimizerRule::Adam, .learning_rate = learning_rate, .alpha = static_cast<float>(alpha),
            .beta1 = c_.beta_1, .beta2 = c_.beta_2, .epsilon = c_.epsilon, .amsgrad = c_.amsgrad};
  }

 private:
  AdamConstants c_;
  std::string name_;
};

class RMSpropOptimizer final : public Optimizer {
 public:
  explicit RMSpropOptimizer(const optimizers::RMSpropOptions& o)
      : Optimizer("RMSprop", o.learning_rate, o.common), o_(o) {
    MIRROR_REQUIRE(o.rho >= 0 && o.rho < 1, InvalidArgument, "RMSprop's rho must be in [0, 1), got ", o.rho);
    MIRROR_REQUIRE(o.momentum >= 0 && o.momentum <= 1, InvalidArgument, "RMSprop's momentum must be in [0, 1], got ",
                   o.momentum);
    require_finite_positive("RMSprop", "epsilon", o.epsilon);
  }
  std::string name() const override { return "rmsprop"; }

 protected:
  OptimizerStep rule(int64_t, float learning_rate) const override {
    return {.rule = OptimizerRule::RMSprop, .learning_rate = learning_rate, .beta2 = o_.rho, .epsilon = o_.epsilon,
            .momentum = o_.momentum, .centered = o_.centered};
  }

 private:
  optimizers::RMSpropOptions o_;
};

}  // namespace

Optimizer::Optimizer(const std::string& who, LearningRate learning_rate, OptimizerCommon common)
    : learning_rate_(std::move(learning_rate)), common_(std::move(common)) {
  if (!learning_rate_.schedule) require_finite_positive(who, "learning rate", learning_rate_.value);
  check_common(who, common_);
}

float Optimizer::learning_rate(int64_t iteration) const {
  return learning_rate_.schedule ? (*learning_rate_.schedule)(iteration) : learning_rate_.value;
}

void Optimizer::set_learning_rate(float value) {
  MIRROR_REQUIRE(!learning_rate_.schedule, InvalidArgument, "the ", name(),
                 " optimizer's learning rate is a schedule, so it cannot be set (as in Keras): drop the schedule or "
                 "the callback that sets the rate");
  MIRROR_REQUIRE(value >= 0 && std::isfinite(value), InvalidArgument, "a learning rate must be >= 0 and finite, got ",
                 value);
  learning_rate_.value = value;
}

std::vector<float> Optimizer::decay_factors(std::span<const std::string> names) const {
  if (common_.weight_decay <= 0 || common_.exclude_from_weight_decay.empty()) return {};
  std::vector<std::regex> patterns;
  for (const std::string& p : common_.exclude_from_weight_decay) patterns.emplace_back(p);
  std::vector<float> factors;
  for (const std::string& name : names) {
    bool excluded = false;
    for (const std::regex& p : patterns) excluded = excluded || std::regex_search(name, p);
    factors.push_back(excluded ? 0.0f : 1.0f);
  }
  return factors;
}

void Optimizer::apply(Backend& backend, int64_t iteration, float learning_rate, const OptimizerBuffers& b) const {
  OptimizerStep step = rule(iteration, learning_rate);
  step.weight_decay = common_.weight_decay;
  step.clipvalue = common_.clipvalue;
  ParameterSegments segments = b.segments;
  if (clips_by_norm() && segments.count > 0) {
    const bool global = common_.global_clipnorm > 0;
    backend.clip_scales(segments, b.grads, global ? common_.global_clipnorm : common_.clipnorm, global, b.scales);
    segments.grad_scales = b.scales;
  }
  backend.optimizer_update(b.count, step, segments, b.guard, b.params, b.grads, b.slots);
}

OptimizerPtr optimizers::SGD(const SGDOptions& o) { return std::make_shared<SGDOptimizer>(o); }

OptimizerPtr optimizers::Adam(const AdamOptions& o) {
  return std::make_shared<AdamOptimizer>("Adam", o.learning_rate, o.common,
                                         AdamConstants{o.beta_1, o.beta_2, o.epsilon, o.amsgrad});
}

OptimizerPtr optimizers::AdamW(const AdamWOptions& o) {
  OptimizerCommon common = o.common;
  common.weight_decay = o.weight_decay;
  MIRROR_REQUIRE(o.weight_decay > 0, InvalidArgument, "AdamW needs a positive weight_decay, got ", o.weight_decay,
                 " (use Adam for none)");
  return std::make_shared<AdamOptimizer>("AdamW", o.learning_rate, std::move(common),
                                         AdamConstants{o.beta_1, o.beta_2, o.epsilon, o.amsgrad});
}

OptimizerPtr optimizers::RMSprop(const RMSpropOptions& o) { return std::make_shared<RMSpropOptimizer>(o); }

}  // namespace mirror
