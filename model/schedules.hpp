// Learning-rate schedules: Keras 3's keras.optimizers.schedules, evaluated on the host on the
// optimizer's iteration (the number of updates before this one, the same on every replica), so a
// schedule steps once per global batch whatever the replica count.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mirror {

class LearningRateSchedule {
 public:
  virtual ~LearningRateSchedule() = default;
  // The learning rate of update `iteration` (0-based).
  virtual float operator()(int64_t iteration) const = 0;
};

using SchedulePtr = std::shared_ptr<const LearningRateSchedule>;

// An optimizer's learning rate: a fixed value or a schedule (Keras accepts either).
struct LearningRate {
  LearningRate(float value) : value(value) {}  // NOLINT: implicit, as Keras takes a float
  LearningRate(SchedulePtr schedule) : schedule(std::move(schedule)) {}  // NOLINT
  float value = 0.001f;  // used when there is no schedule
  SchedulePtr schedule;
};

namespace schedules {

// initial * decay_rate ^ (iteration / decay_steps), the exponent floored with `staircase`.
SchedulePtr ExponentialDecay(float initial_learning_rate, int64_t decay_steps, float decay_rate,
                             bool staircase = false);
// values[0] up to and including boundaries[0], values[i] in (boundaries[i-1], boundaries[i]], the
// last value after the last boundary. values.size() = boundaries.size() + 1, boundaries increasing.
SchedulePtr PiecewiseConstantDecay(std::vector<int64_t> boundaries, std::vector<float> values);

struct CosineDecayOptions {
  float alpha = 0.0f;                  // the floor, as a fraction of the rate decayed from
  std::optional<float> warmup_target = {};  // with it: linear warm-up from the initial rate to this one
  int64_t warmup_steps = 0;
};
// Without warm-up: initial * ((1 - alpha) (1 + cos(pi min(i, decay_steps) / decay_steps)) / 2 + alpha).
// With warmup_target: for i < warmup_steps, initial + (target - initial) i / warmup_steps; then the
// cosine decay from warmup_target over decay_steps, on i - warmup_steps (Keras 3).
SchedulePtr CosineDecay(float initial_learning_rate, int64_t decay_steps, const CosineDecayOptions& options = {});

struct PolynomialDecayOptions {
  float end_learning_rate = 0.0001f;
  float power = 1.0f;
  bool cycle = false;  // restart the decay every decay_steps (each cycle's length a multiple of it)
};
// (initial - end) (1 - min(i, decay_steps) / decay_steps) ^ power + end.
SchedulePtr PolynomialDecay(float initial_learning_rate, int64_t decay_steps, const PolynomialDecayOptions& options = {});

// A function of the iteration of the user's own.
SchedulePtr Lambda(std::function<float(int64_t)> fn);

}  // namespace schedules
}  // namespace mirror
