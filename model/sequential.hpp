// Sequential: a stack of layers trained through a Strategy, with Keras's API and defaults.
//
//   Sequential model({layers::Conv2D(32, {3, 3}, Activation::ReLU, Shape{28, 28, 1}),
//                     layers::MaxPooling2D({2, 2}), layers::Flatten(),
//                     layers::Dense(10, Activation::Softmax)});
//   model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()});
//   model.fit(data.train, {.epochs = 2, .batch_size = 32});
//
// Each replica of the strategy holds its own copy of every parameter and optimizer slot in flat
// buffers (parameters in reverse layer order, so gradients of the last layers are ready first).
// The strategy must outlive the model.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/data/dataset.hpp"
#include "model/layer.hpp"
#include "model/losses.hpp"
#include "model/optimizer.hpp"
#include "strategy/strategy.hpp"

namespace mirror {

struct FitOptions {
  int epochs = 1;
  int64_t batch_size = 32;          // global batch, split across the replicas
  bool shuffle = true;              // a new seeded permutation every epoch
  uint64_t seed = 0;                // shuffling seed
  int verbose = 1;                  // 0 silent; 1 progress bar (in place on a terminal); 2 one line per epoch
  std::ostream* out = nullptr;      // progress output (nullptr = std::cout)
  const ImageSet* validation_data = nullptr;  // evaluated after each epoch when set
  int64_t steps_per_epoch = 0;      // 0 = every batch of the data set
  bool verify_replicas = false;     // debug: check after every step that all replicas hold identical parameters
  // Gradients are all-reduced in buckets of this size, each started as soon as backward has
  // produced it (last layers first), as in PyTorch's DDP (its default: 25 MB).
  size_t gradient_bucket_bytes = size_t{25} << 20;
};

struct EpochLog {
  int epoch = 0;                    // 1-based
  double loss = 0, accuracy = 0;    // means over the epoch's samples
  double seconds = 0, samples_per_second = 0;
  std::optional<double> val_loss, val_accuracy;
};

struct History {
  std::vector<EpochLog> epochs;
};

struct EvaluateOptions {
  int64_t batch_size = 32;
  int verbose = 1;
  std::ostream* out = nullptr;
};

struct EvaluateResult {
  double loss = 0, accuracy = 0;
  double seconds = 0;
};

class Sequential {
 public:
  Sequential(std::initializer_list<LayerPtr> layers);
  explicit Sequential(std::vector<LayerPtr> layers = {}, std::string name = "sequential");
  ~Sequential();
  Sequential(const Sequential&) = delete;
  Sequential& operator=(const Sequential&) = delete;

  void add(LayerPtr layer);

  // Builds the model (when the first layer declares its input shape), creates every replica's
  // parameters from `seed` (glorot-uniform kernels, zero biases) on replica 0 and broadcasts them.
  void compile(Strategy& strategy, OptimizerPtr optimizer,
               losses::SparseCategoricalCrossentropy loss = {}, std::vector<metrics::Metric> metrics = {},
               uint64_t seed = 0);

  // Trains on `train`. Throws InvalidArgument for a batch size or epoch count that makes no sense,
  // DataError for labels outside the model's classes or images of the wrong shape, and
  // NumericalError when the loss becomes NaN or infinite (naming the epoch and step; that step's
  // update is not applied, so the weights are those of the last good step).
  History fit(const ImageSet& train, const FitOptions& options = {});

  // Mean loss and accuracy over `data`.
  EvaluateResult evaluate(const ImageSet& data, const EvaluateOptions& options = {});

  // The model's outputs for every sample of `data`: count * output size floats, row-major.
  std::vector<float> predict(const ImageSet& data, int64_t batch_size = 32);

  // Keras-style table of layers, output shapes and parameter counts.
  void summary(std::ostream& out = std::cout) const;
  int64_t count_params() const;

  // Replica `replica`'s parameters, layer by layer in Keras's get_weights() order, flattened.
  std::vector<float> get_weights(int replica = 0);
  // Sets every replica's parameters (same order as get_weights()).
  void set_weights(std::span<const float> weights);
  // True when every replica holds bitwise-identical parameters.
  bool replicas_identical();

  const std::vector<LayerPtr>& layers() const { return layers_; }
  bool built() const { return built_; }
  Shape input_shape() const;
  Shape output_shape() const;

 private:
  struct ParamSlot;
  struct ReplicaState;

  void build(const Shape& input);
  void require_compiled(const char* what) const;
  void check_data(const ImageSet& data, const char* what);
  void reserve_rows(int64_t rows_per_replica);
  void reserve_batch(int64_t batch_size, int64_t count);
  void initialize_parameters();
  void release_resident(const ImageSet& data);
  ResidentImages& resident(int replica, const ImageSet& data);
  void forward(int replica, int64_t rows);
  // Runs backward; after each layer, starts the all-reduce of every gradient bucket now complete.
  void backward(int replica, int64_t rows, bool fused_softmax, size_t& next_bucket);
  // Starts the all-reduce of the buckets in [next_bucket, ready) (the last one may be short when
  // `ready` is the end of the buffer) and advances next_bucket.
  void reduce_ready_buckets(int replica, size_t ready, size_t& next_bucket);
  void reset_totals();
  // `iteration` counts optimizer steps since compile(); `step` counts this epoch's batches.
  void train_step(int replica, const ImageSet& data, std::span<const int32_t> indices, int64_t global_rows,
                  int64_t iteration, int64_t step, bool read_totals);
  void evaluate_step(int replica, const ImageSet& data, std::span<const int32_t> indices, int64_t step,
                     bool read_totals);
  void run_epoch(const ImageSet& train, const FitOptions& options, int epoch, EpochLog& log);
  void verify_replicas(int epoch, int64_t step);
  // One step's work on one replica: (replica, its share of the batch, global rows, step, read the totals).
  using ReplicaStep = std::function<void(int, std::span<const int32_t>, int64_t, int64_t, bool)>;
  // Called on the host after the totals were read: (step, samples so far).
  using AfterRead = std::function<void(int64_t, int64_t)>;
  // Runs `steps` batches of `order` on every replica, reading the device's totals at least every
  // 100 ms and after the last step (or after every step). Returns the number of samples.
  int64_t run_batches(std::span<const int32_t> order, int64_t batch_size, int64_t steps, bool read_every_step,
                      const ReplicaStep& replica_step, const AfterRead& after_read);

  std::string name_;
  std::vector<LayerPtr> layers_;
  bool built_ = false;
  Strategy* strategy_ = nullptr;
  OptimizerPtr optimizer_;
  std::vector<metrics::Metric> metrics_;
  std::vector<std::vector<ParamSlot>> layer_params_;  // per layer, per ParamSpec
  size_t param_count_ = 0;      // padded length of the flat parameter buffer
  size_t stats_offset_ = 0;     // where the step's loss statistics follow the gradients
  std::vector<size_t> ready_after_;  // per layer: gradients [0, ready_after_[l]) are final after layer l's backward
  size_t bucket_floats_ = 0;         // gradient bucket size of the current fit()
  int64_t iterations_ = 0;      // optimizer steps applied so far
  uint64_t seed_ = 0;           // weight initialisation seed (used when the model is built late)
  std::vector<std::unique_ptr<ReplicaState>> replicas_;
};

}  // namespace mirror
