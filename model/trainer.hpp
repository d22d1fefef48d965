// Trainer: the training loop, in one place apart from the model graph (private to model/).
// fit walks epochs and batches, shuffles, splits each global batch across the replicas, runs the
// step on every replica, reads the device's running totals only now and then (progress bar, the
// NaN policy, History); evaluate and predict walk the data in order. What a step does on a
// replica is the ModelRuntime's.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "mirror/engine/error.hpp"
#include "mirror/engine/function_ref.hpp"
#include "mirror/model/backup.hpp"
#include "mirror/model/fit_report.hpp"
#include "mirror/model/model.hpp"
#include "mirror/model/runtime.hpp"

namespace mirror {

class Trainer {
 public:
  explicit Trainer(ModelRuntime& runtime) : runtime_(runtime) {}

  // `model` is what the callbacks see (the model this runtime belongs to).
  History fit(const ImageSet& train, const FitOptions& options, Model& model);
  EvaluateResult evaluate(const ImageSet& data, const EvaluateOptions& options);
  std::vector<float> predict(const ImageSet& data, int64_t batch_size);

 private:
  // The rows fit trains on and validates on: `train`'s [0, train_rows), and `val` (all of
  // validation_data, or the rows of `train` that validation_split holds out).
  struct FitData {
    const ImageSet* train = nullptr;
    int64_t train_rows = 0;
    const ImageSet* val = nullptr;
    std::vector<int32_t> val_order;
  };
  struct BatchesRun {
    int64_t seen = 0;   // samples
    int64_t steps = 0;  // batches run (fewer than asked when a hook stopped the loop)
  };
  // Throws DataError for an empty or inconsistent set, images of another shape, or (with
  // `labels`) label values the loss cannot take.
  void check_data(const ImageSet& data, const char* what, bool labels) const;
  FitData split_data(const ImageSet& train, const FitOptions& options) const;
  // Spans per lane a traced fit of `steps` per epoch needs (capped).
  size_t trace_capacity(int64_t steps, const FitData& data, const FitOptions& options) const;
  // One fit's state beyond its options: where it is, its backups, the signals it watches.
  struct FitRun;
  // Runs the epoch `run.progress.epoch` from its step `run.progress.step` and fills `log`. Throws
  // Interrupted (after a backup, when the fit has a backup directory) when a signal arrived.
  void run_epoch(FitRun& run, EpochLog& log);
  // Writes a backup of the model after `iterations` optimizer steps and `run.progress` to the run's directory.
  void write_backup(FitRun& run, int64_t iterations);
  // The error that ends a fit stopped by `signal` after step `step` (1-based) of the epoch in progress.
  Interrupted interrupted(const FitRun& run, int signal, int64_t step) const;
  EvaluateResult evaluate_rows(const ImageSet& data, std::span<const int32_t> order, const EvaluateOptions& options);
  // One step's work on one replica: (replica, its share, the share's first row, the step).
  using ReplicaStep = FunctionRef<void(int, std::span<const int32_t>, int64_t, const StepInfo&)>;
  // Called on the host before a step, and after it with (step, samples so far, whether the totals
  // were read); returning false ends the loop after that step (the totals are read then).
  using BeforeStep = FunctionRef<void(int64_t)>;
  using AfterStep = FunctionRef<bool(int64_t, int64_t, bool)>;
  // Runs batches [first_step, steps) of `order` on every replica, reading the device's totals at
  // least every 100 ms and after the last step (or after every step). `seen` counts from
  // `first_step`'s first sample; the totals are the caller's to reset. A failure during a training
  // step marks the runtime suspect (the replicas may differ).
  BatchesRun run_batches(std::span<const int32_t> order, int64_t batch_size, int64_t first_step, int64_t steps,
                         int64_t first_iteration,
                         bool read_every_step, ReplicaStep replica_step, BeforeStep before, AfterStep after);
  // "loss" and each metric's Keras name, with zeros.
  MetricValues metric_names() const;
  // The running means of the loss and each metric over `seen` samples, by Keras name; the second
  // form sets the values of metric_names()' `values` and allocates nothing (fit's steady state).
  MetricValues means(int64_t seen) const;
  void means(int64_t seen, MetricValues& values) const;

  ModelRuntime& runtime_;
  StepTimes times_;  // the training steps of the fit in progress
};

}  // namespace mirror
