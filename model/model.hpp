// Model: a graph of layers from one input to one output, trained through a Strategy with Keras's
// API and defaults. Build it with the functional API (graph.hpp) or as a Sequential stack.
//
//   Tensor x = Input(Shape{28, 28, 1});
//   Tensor y = layers::Conv2D(32, {3, 3}, Activation::ReLU)(x);
//   y = layers::Dense(10, Activation::Softmax)(layers::Flatten()(layers::MaxPooling2D()(y)));
//   Model model(x, y);
//   model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()});
//   History history = model.fit(data.train, {.epochs = 2, .batch_size = 32});
//
// Each replica of the strategy holds its own copy of every variable and optimizer slot in flat
// buffers. A model used after its strategy was destroyed throws InvalidArgument (its variables
// went with the strategy; compile it again with a live one), and a strategy runs one model's fit,
// evaluate or predict at a time: another thread's call on the same strategy is refused
// (strategy/strategy.hpp).
#pragma once

#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "mirror/engine/data/dataset.hpp"
#include "mirror/model/callbacks.hpp"
#include "mirror/model/graph.hpp"
#include "mirror/model/history.hpp"
#include "mirror/model/losses.hpp"
#include "mirror/model/optimizer.hpp"
#include "mirror/strategy/strategy.hpp"

namespace mirror {

class ModelRuntime;

struct FitOptions {
  int epochs = 1;
  int64_t batch_size = 32;          // global batch, split across the replicas
  bool shuffle = true;              // a new seeded permutation every epoch
  uint64_t seed = 0;                // shuffling seed (dropout masks follow compile()'s seed)
  int verbose = 1;                  // 0 silent; 1 progress bar (in place on a terminal); 2 one line per epoch
  std::ostream* out = nullptr;      // progress output (nullptr = std::cout)
  const ImageSet* validation_data = nullptr;  // evaluated after each epoch when set
  // Keras's validation_split: the last fraction of the training samples (taken before shuffling)
  // is held out and evaluated instead of trained on. In [0, 1); not with validation_data.
  double validation_split = 0.0;
  int validation_freq = 1;          // validate after every N-th epoch (and its val_ values are logged then)
  // Run on the host, once per hook, in order (never per replica). Without callbacks::TerminateOnNaN
  // a loss that is not finite throws NumericalError; with it, fit stops and returns the history.
  std::vector<CallbackPtr> callbacks = {};
  int64_t steps_per_epoch = 0;      // 0 = every batch of the data set
  bool verify_replicas = false;     // debug: check after every step that all replicas hold identical variables
  // Gradients are all-reduced in buckets of this size, each started as soon as backward has
  // produced it (last layers first), as in PyTorch's DDP (its default: 25 MB).
  size_t gradient_bucket_bytes = size_t{25} << 20;

  // Keras's BackupAndRestore. With a directory, fit writes a backup there (a checkpoint with
  // where the run was: epoch, step, running means, history, callbacks' state) after every epoch,
  // and also every `backup_every_steps` steps and every `backup_every_seconds` seconds when set;
  // it keeps the newest `backup_keep`. Started again with the same directory and options, fit
  // continues from the newest backup exactly as if it had never stopped (bitwise, on the same
  // strategy) and returns the whole history. After a run that finished, the backups are deleted
  // (Keras's delete_checkpoint) unless `backup_keep_at_end`. The directory is created if needed.
  std::string backup_dir = "";
  int64_t backup_every_steps = 0;
  double backup_every_seconds = 0;
  int backup_keep = 2;
  bool backup_keep_at_end = false;
  // SIGINT and SIGTERM end fit after the current step, with a backup when backup_dir is set, and
  // throw Interrupted naming the signal (always so with a backup_dir). A second signal acts as it
  // would without fit (by default: the process ends at once).
  bool stop_on_signals = false;

  // A path: fit writes there a timeline of its steps as a Chrome trace-event file (JSON, for
  // Perfetto or chrome://tracing): on each replica's lane the step, gathering the batch, every
  // layer's forward and backward, the loss, waiting for the all-reduces, the optimizer and the
  // host's reads of the totals; on its communication lane each gradient bucket's all-reduce. Written
  // when fit ends, also by an exception (an interrupted fit shows the steps it ran); in a
  // multi-worker job by the chief only, for its own replicas. Empty: off, at no measurable cost.
  std::string trace = "";
};

struct EvaluateOptions {
  int64_t batch_size = 32;
  int verbose = 1;
  std::ostream* out = nullptr;
  // SIGINT and SIGTERM end evaluate after the current batch and throw Interrupted naming the
  // signal and the batch. A second signal acts as it would without evaluate.
  bool stop_on_signals = false;
};

struct EvaluateResult {
  double loss = 0, accuracy = 0;
  double seconds = 0;
  MetricValues values;  // "loss" and every metric by name
};

// A variable as get_weights() orders them: Keras's path ("conv2d/kernel"), shape, trainable or not.
struct VariableInfo {
  std::string path;
  Shape shape;
  bool trainable = true;
};

class Model {
 public:
  Model(const Tensor& input, const Tensor& output, std::string name = "functional");
  virtual ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Binds the model to `strategy`, creates every replica's variables from `seed` on replica 0 and
  // broadcasts them. Compiling again (another optimizer, loss or strategy) keeps the weights, as
  // Keras does; the optimizer starts afresh (its slots and iteration count are zero). To start
  // from fresh weights, build a new model (its variables come from compile's `seed`), or
  // set_weights with values of your own. When the strategy of the first compile was destroyed,
  // its weights went with it and compiling again creates them from `seed`. A model whose input
  // shape is unknown until it sees data (a Sequential without input_shape) creates its variables
  // at the first fit().
  void compile(Strategy& strategy, OptimizerPtr optimizer, Loss loss = {}, std::vector<Metric> metrics = {},
               uint64_t seed = 0);

  // Trains on `train`. Throws InvalidArgument for a batch size or epoch count that makes no sense,
  // DataError for labels the loss cannot take or images of the wrong shape (in the training or the
  // validation set, before any step), and NumericalError when the loss becomes NaN or infinite
  // (naming the epoch and step; that step's update is not applied, so the variables are those of
  // the last good step) unless callbacks::TerminateOnNaN is among the callbacks: then fit stops
  // and returns the history. Callbacks run on the calling thread, once per hook. With a
  // backup_dir, a fit that holds a backup resumes from it (throwing InvalidArgument when it was
  // taken with another batch size, seed or data set); a signal ends it with Interrupted.
  History fit(const ImageSet& train, const FitOptions& options = {});
  // The loss and every metric over `data`, in inference mode.
  EvaluateResult evaluate(const ImageSet& data, const EvaluateOptions& options = {});
  // The model's outputs for every sample of `data` (labels are not read): count * output size
  // floats, row-major.
  // `data.labels` may be empty.
  std::vector<float> predict(const ImageSet& data, int64_t batch_size = 32);

  // The optimizer given to compile() (callbacks change its learning rate through it).
  Optimizer& optimizer() const;
  // Optimizer steps taken since compile() (or restored by load_checkpoint).
  int64_t iterations() const;
  // Set by a callback to end fit() after the current batch (Keras's model.stop_training).
  void set_stop_training(bool stop) { stop_training_ = stop; }
  bool stop_training() const { return stop_training_; }

  // Keras-style table of layers, output shapes and parameter counts.
  void summary(std::ostream& out = std::cout) const;
  int64_t count_params() const;            // every variable's elements, trainable or not (Keras)
  int64_t count_trainable_params() const;

  // Replica `replica`'s variables in Keras's get_weights() order, flattened.
  std::vector<float> get_weights(int replica = 0);
  // Sets every replica's variables (same order as get_weights()). On a built model that is not
  // compiled yet the values are kept and become the variables at compile().
  void set_weights(std::span<const float> weights);
  // get_weights()'s order: each variable's path, shape and kind.
  std::vector<VariableInfo> variables() const;
  // True when every replica holds bitwise-identical variables.
  bool replicas_identical();

  // Keras 3's files (model/saving.hpp has load_model). save_weights writes a ".weights.h5" file
  // (HDF5, Keras's layout), save a ".keras" archive (config, weights, metadata); load_weights reads
  // a ".weights.h5" or ".keras" file into this model's variables, and throws (leaving them as they
  // were) when the file does not fit the model, naming the variable and both shapes.
  void save_weights(const std::string& path);
  void load_weights(const std::string& path);
  void save(const std::string& path);

  // Training checkpoints: every variable, the optimizer's slots and its iteration count (and its
  // learning rate when a callback set it), the seed of the dropout masks, written
  // atomically with a CRC-32 of the contents. load_checkpoint needs a model compiled with the same
  // architecture and optimizer (any strategy, any replica count) and changes nothing when the file
  // is damaged or does not fit (the error names the variable and both shapes).
  void save_checkpoint(const std::string& path);
  void load_checkpoint(const std::string& path);

  // The layers in the order their nodes run (an input has none).
  virtual std::vector<LayerPtr> layers() const;
  bool built() const { return input_.valid(); }
  Shape input_shape() const;
  Shape output_shape() const;
  const std::string& name() const { return name_; }
  // The graph's ends (invalid tensors until the model is built).
  const Tensor& input() const { return input_; }
  const Tensor& output() const { return output_; }
  // True for a Sequential (saved files describe it as one).
  bool sequential() const { return is_sequential(); }

 protected:
  explicit Model(std::string name);
  // Fixes the graph (a Sequential does so once it knows its input shape). Names unnamed layers
  // Keras's way: conv2d, conv2d_1, ... in the order they run.
  void set_graph(const Tensor& input, const Tensor& output);
  // Builds the graph when the input shape is known without data (compile calls it).
  virtual void build_declared() {}
  // Called with a data set's sample shape before fit / evaluate / predict on an unbuilt model.
  virtual void build_from_data(const Shape& sample_shape);
  // Whether summary() prints a Sequential's table (no input row, no "Connected to" column).
  virtual bool is_sequential() const { return false; }
  void require_built(const char* what) const;

 private:
  // Creates the runtime once the model is built and compiled (keeping `weights` when given).
  void make_runtime(const std::vector<float>* weights);
  ModelRuntime& runtime(const ImageSet* data, const char* what);
  // The strategy of the last compile(); throws InvalidArgument naming `what` when there is none
  // or it was destroyed.
  Strategy& live_strategy(const char* what) const;

  std::string name_;
  Tensor input_, output_;
  Strategy* strategy_ = nullptr;
  std::weak_ptr<const void> strategy_alive_;  // expires with *strategy_
  OptimizerPtr optimizer_;
  Loss loss_;
  std::vector<Metric> metrics_;
  uint64_t seed_ = 0;
  std::unique_ptr<ModelRuntime> runtime_;
  bool stop_training_ = false;
  std::vector<float> pending_weights_;  // set_weights before compile: used by the first runtime
};

}  // namespace mirror
