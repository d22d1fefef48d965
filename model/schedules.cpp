// Keras 3's learning-rate schedules (see schedules.hpp), computed in double and returned as float.
#include "mirror/model/schedules.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "mirror/engine/error.hpp"

namespace mirror::schedules {
namespace {

// A schedule from a function, its arguments already checked.
class FunctionSchedule final : public LearningRateSchedule {
 public:
  explicit FunctionSchedule(std::function<double(double)> fn) : fn_(std::move(fn)) {}
  float operator()(int64_t iteration) const override { return static_cast<float>(fn_(static_cast<double>(iteration))); }

 private:
  std::function<double(double)> fn_;
};

void check_decay(const char* what, float initial, int64_t decay_steps) {
  MIRROR_REQUIRE(std::isfinite(initial) && initial >= 0, InvalidArgument, what,
                 "'s initial_learning_rate must be finite and >= 0, got ", initial);
  MIRROR_REQUIRE(decay_steps > 0, InvalidArgument, what, "'s decay_steps must be positive, got ", decay_steps);
}

// Keras 3 CosineDecay._decay_function.
double cosine(double step, double decay_steps, double from, double alpha) {
  const double decayed = 0.5 * (1.0 + std::cos(std::numbers::pi * step / decay_steps));
  return from * ((1.0 - alpha) * decayed + alpha);
}

}  // namespace

SchedulePtr ExponentialDecay(float initial, int64_t decay_steps, float decay_rate, bool staircase) {
  check_decay("ExponentialDecay", initial, decay_steps);
  MIRROR_REQUIRE(decay_rate > 0, InvalidArgument, "ExponentialDecay's decay_rate must be positive, got ", decay_rate);
  return std::make_shared<FunctionSchedule>([=](double i) {
    double p = i / static_cast<double>(decay_steps);
    if (staircase) p = std::floor(p);
    return initial * std::pow(double{decay_rate}, p);
  });
}

SchedulePtr PiecewiseConstantDecay(std::vector<int64_t> boundaries, std::vector<float> values) {
  MIRROR_REQUIRE(values.size() == boundaries.size() + 1, InvalidArgument,
                 "PiecewiseConstantDecay needs one more value than boundaries, got ", values.size(), " values and ",
                 boundaries.size(), " boundaries");
  MIRROR_REQUIRE(std::is_sorted(boundaries.begin(), boundaries.end()), InvalidArgument,
                 "PiecewiseConstantDecay's boundaries must be increasing");
  return std::make_shared<FunctionSchedule>([boundaries = std::move(boundaries), values = std::move(values)](double i) {
    // The first boundary >= i: iteration b belongs to the interval that ends at b.
    const auto at = std::lower_bound(boundaries.begin(), boundaries.end(), static_cast<int64_t>(i));
    return double{values[static_cast<size_t>(at - boundaries.begin())]};
  });
}

SchedulePtr CosineDecay(float initial, int64_t decay_steps, const CosineDecayOptions& o) {
  check_decay("CosineDecay", initial, decay_steps);
  MIRROR_REQUIRE(o.alpha >= 0 && o.alpha <= 1, InvalidArgument, "CosineDecay's alpha must be in [0, 1], got ", o.alpha);
  MIRROR_REQUIRE(o.warmup_steps >= 0, InvalidArgument, "CosineDecay's warmup_steps must be >= 0, got ", o.warmup_steps);
  MIRROR_REQUIRE(o.warmup_target || o.warmup_steps == 0, InvalidArgument,
                 "CosineDecay's warmup_steps needs a warmup_target (the rate the warm-up reaches)");
  const auto steps = static_cast<double>(decay_steps);
  const double alpha = o.alpha;
  if (!o.warmup_target)
    return std::make_shared<FunctionSchedule>([=](double i) { return cosine(std::min(i, steps), steps, initial, alpha); });
  const double target = *o.warmup_target, warmup = static_cast<double>(o.warmup_steps);
  return std::make_shared<FunctionSchedule>([=](double i) {
    i = std::min(i, steps + warmup);
    if (i < warmup) return (target - initial) * (i / warmup) + initial;
    return cosine(i - warmup, steps, target, alpha);
  });
}

SchedulePtr PolynomialDecay(float initial, int64_t decay_steps, const PolynomialDecayOptions& o) {
  check_decay("PolynomialDecay", initial, decay_steps);
  return std::make_shared<FunctionSchedule>([=](double i) {
    double steps = static_cast<double>(decay_steps);
    if (o.cycle) {
      steps *= i == 0 ? 1.0 : std::ceil(i / steps);  // Keras: a multiplier of 1 at step 0
    } else {
      i = std::min(i, steps);
    }
    return (double{initial} - o.end_learning_rate) * std::pow(1.0 - i / steps, double{o.power}) + o.end_learning_rate;
  });
}

SchedulePtr Lambda(std::function<float(int64_t)> fn) {
  MIRROR_REQUIRE(fn != nullptr, InvalidArgument, "schedules::Lambda needs a function");
  return std::make_shared<FunctionSchedule>([fn = std::move(fn)](double i) { return double{fn(static_cast<int64_t>(i))}; });
}

}  // namespace mirror::schedules
