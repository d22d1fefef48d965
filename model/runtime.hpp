// ModelRuntime: a compiled model on a strategy (private to model/). It holds every replica's
// variables, optimizer slots, activations and gradients, and runs one step's work on one replica:
// gather its share of the batch, forward, loss and metrics, backward with the gradient buckets
// handed to the strategy's reducer as they complete, and the update. The loops over epochs and
// batches live in the Trainer (trainer.hpp); the graph analysis in the Plan (plan.hpp).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "mirror/engine/backend.hpp"
#include "mirror/engine/data/dataset.hpp"
#include "mirror/model/losses.hpp"
#include "mirror/model/optimizer.hpp"
#include "mirror/model/plan.hpp"
#include "mirror/strategy/gradient_reducer.hpp"
#include "mirror/strategy/strategy.hpp"

namespace mirror {

// One step as every replica sees it.
struct StepInfo {
  int64_t global_rows = 0;   // samples in the global batch
  int64_t iteration = 0;     // optimizer steps before this one
  float learning_rate = 0;   // the optimizer's rate for this step (training)
  int64_t step = 0;          // the batch's index in its epoch (or evaluation)
  bool read_totals = false;  // replica 0 copies the running totals to the host after the step
};

class ModelRuntime {
 public:
  ModelRuntime(Plan plan, Strategy& strategy, OptimizerPtr optimizer, Loss loss, std::vector<Metric> metrics,
               uint64_t seed);
  ~ModelRuntime();
  ModelRuntime(const ModelRuntime&) = delete;
  ModelRuntime& operator=(const ModelRuntime&) = delete;

  const Plan& plan() const { return plan_; }
  Optimizer& optimizer() const { return *optimizer_; }
  Strategy& strategy() const { return *strategy_; }
  const Loss& loss() const { return loss_; }
  const std::vector<Metric>& metrics() const { return metrics_; }
  // Floats of a step's statistics: the loss sum, then one sum per metric.
  size_t stats_width() const { return 1 + metrics_.size(); }
  int64_t output_width() const;

  // Optimizer steps applied (or, after a NaN, skipped as fit stops) since the runtime was made.
  int64_t iterations() const { return iterations_; }
  void add_iterations(int64_t steps) { iterations_ += steps; }

  // Makes room for shares of up to `rows` samples on every replica (only ever grows).
  void reserve_rows(int64_t rows);
  // Sets every replica's running totals to zero (and "no bad step").
  void reset_totals();
  // Replica 0 copies its running totals to the host now (and waits for them).
  void read_totals();
  // Sets every replica's running totals (and the host's copy) to `totals` (a backup's).
  void set_totals(std::span<const float> totals);
  // The totals replica 0 last copied to the host: stats_width() sums, then the first bad step or -1.
  const std::vector<float>& host_totals() const { return host_totals_; }

  // Run on replica `replica`'s worker thread, every replica with its share of the same batch.
  void train_step(int replica, const ImageSet& data, std::span<const int32_t> share, int64_t first_row,
                  const StepInfo& step, GradientReducer& reducer);
  // Nanoseconds replica `replica`'s last train_step took (host clock; read after the step).
  int64_t last_step_ns(int replica) const { return step_ns_[static_cast<size_t>(replica)]; }
  void evaluate_step(int replica, const ImageSet& data, std::span<const int32_t> share, int64_t first_row,
                     const StepInfo& step);
  // Writes the share's outputs (rows x output_width floats) to host memory `out`.
  void predict_step(int replica, const ImageSet& data, std::span<const int32_t> share, int64_t first_row,
                    int64_t global_rows, float* out);
  // Device copies of a data set live for one fit / evaluate / predict call.
  void release(const ImageSet& data);

  // Every variable of replica `replica` in Keras's order (get_weights), or set on every replica.
  std::vector<float> get_weights(int replica);
  void set_weights(std::span<const float> weights);
  bool replicas_identical();
  // The optimizer's slots of replica `replica` (slot_count buffers laid out as the trainable
  // parameters), or set on every replica; for checkpoints.
  std::vector<float> get_slots(int replica);
  void set_slots(std::span<const float> slots);
  void set_iterations(int64_t iterations) { iterations_ = iterations; }
  // The seed of the model's random streams (dropout masks): compile's, or a checkpoint's.
  uint64_t seed() const { return seed_; }
  void set_seed(uint64_t seed) { seed_ = seed; }

  // A training step that failed part-way (an exception from a replica) may have updated some
  // replicas and not others. fit marks it; require_consistent() then checks the replicas once and
  // throws Error when they differ (set_weights or a checkpoint makes them one model again).
  void mark_suspect() { suspect_ = true; }
  void require_consistent(const char* what);

 private:
  struct Replica;
  // The tracer's name ids of a step's spans (named once, when the runtime is made).
  struct SpanNames {
    int step = 0, evaluate = 0, gather = 0, loss = 0, reduce_wait = 0, optimizer = 0, read_totals = 0;
    std::vector<int> forward, backward;  // per node
  };
  void name_spans();
  void initialize_variables(uint64_t seed);
  void forward(Replica& s, const LayerContext& ctx);
  void backward(Replica& s, const LayerContext& ctx, GradientReducer& reducer);
  // The step's statistics into the running totals, the optimizer, and the layers' state updates.
  void update(int replica, const LayerContext& ctx, const StepInfo& step);
  void gather(int replica, const ImageSet& data, std::span<const int32_t> share);
  LayerContext context(int replica, bool training, int64_t rows, int64_t first_row, const StepInfo& step) const;

  Plan plan_;
  Strategy* strategy_;
  OptimizerPtr optimizer_;
  Loss loss_;
  std::vector<Metric> metrics_;
  uint64_t seed_;
  std::vector<ReplicaContext> contexts_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::vector<float> host_totals_;
  int64_t iterations_ = 0;
  int64_t segment_count_ = 0;  // trainable variables
  SpanNames spans_;
  std::vector<int64_t> step_ns_;  // per replica: its last train_step's time
  bool suspect_ = false;
};

}  // namespace mirror
