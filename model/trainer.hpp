// Trainer: the training loop, in one place apart from the model graph (private to model/).
// fit walks epochs and batches, shuffles, splits each global batch across the replicas, runs the
// step on every replica, reads the device's running totals only now and then (progress bar, the
// NaN policy, History); evaluate and predict walk the data in order. What a step does on a
// replica is the ModelRuntime's.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/model.hpp"
#include "model/runtime.hpp"

namespace mirror {

class Trainer {
 public:
  explicit Trainer(ModelRuntime& runtime) : runtime_(runtime) {}

  History fit(const ImageSet& train, const FitOptions& options);
  EvaluateResult evaluate(const ImageSet& data, const EvaluateOptions& options);
  std::vector<float> predict(const ImageSet& data, int64_t batch_size);

 private:
  // Throws DataError for an empty or inconsistent set, images of another shape, or (with
  // `labels`) label values the loss cannot take.
  void check_data(const ImageSet& data, const char* what, bool labels) const;
  void run_epoch(const ImageSet& train, const FitOptions& options, int epoch, EpochLog& log);
  // One step's work on one replica: (replica, its share, the share's first row, the step).
  using ReplicaStep = std::function<void(int, std::span<const int32_t>, int64_t, const StepInfo&)>;
  // Called on the host after the totals were read: (step, samples so far).
  using AfterRead = std::function<void(int64_t, int64_t)>;
  // Runs `steps` batches of `order` on every replica, reading the device's totals at least every
  // 100 ms and after the last step (or after every step). Returns the number of samples.
  int64_t run_batches(std::span<const int32_t> order, int64_t batch_size, int64_t steps, int64_t first_iteration,
                      bool read_every_step, const ReplicaStep& replica_step, const AfterRead& after_read);
  // The running means of the loss and each metric over `seen` samples, by Keras name.
  MetricValues means(int64_t seen) const;

  ModelRuntime& runtime_;
};

}  // namespace mirror
