// Callbacks: Keras's hooks into fit(), run on the host, once per hook and in the order given, never
// per replica, so whatever a callback decides (stop, restore weights, a new learning rate) holds for
// every replica alike. The callbacks Keras users reach for first are here; LambdaCallback takes
// functions for any hook.
#pragma once

#include <cstdint>
#include <fstream>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mirror/model/history.hpp"

namespace mirror {

class Model;

// What fit() tells its callbacks (Keras's callback.params).
struct FitParams {
  int epochs = 0;
  // fit continues a run from a backup (FitOptions::backup_dir): epochs before `initial_epoch`
  // (0-based) ran in an earlier process, and the callbacks' state() came back from the backup.
  bool resumed = false;
  int initial_epoch = 0;
  int64_t steps = 0;            // batches per epoch
  bool has_validation = false;  // some epochs have val_ values
  int verbose = 0;
  std::ostream* out = nullptr;  // where fit prints (never null while fit runs)
};

// What a callback must remember so that a run resumed from a backup goes on exactly as if it had
// never stopped: counters and best values (NaN and infinities survive), and floats it keeps
// (EarlyStopping's best weights).
struct CallbackState {
  std::vector<double> numbers;
  std::vector<float> floats;
};

class Callback {
 public:
  virtual ~Callback() = default;

  // Called by fit() before on_train_begin.
  void set_context(Model& model, const FitParams& params) {
    model_ = &model;
    params_ = params;
  }
  Model& model() const;
  const FitParams& params() const { return params_; }

  // Epochs are 0-based here, as in Keras (EpochLog::epoch is 1-based).
  virtual void on_train_begin() {}
  virtual void on_train_end() {}
  virtual void on_epoch_begin(int /*epoch*/) {}
  // `log` holds the epoch's values; a callback may add its own (Keras's logs dict).
  virtual void on_epoch_end(int /*epoch*/, EpochLog& /*log*/) {}
  virtual void on_train_batch_begin(int64_t /*batch*/) {}
  // `logs`: the epoch's running means ("loss", then each metric) when the loop read the device's
  // totals after this batch (at least every 100 ms, and after the epoch's last batch), else null:
  // reading them after every batch would make each step wait for the GPU.
  virtual void on_train_batch_end(int64_t /*batch*/, const MetricValues* /*logs*/) {}

  // Taken with every backup fit writes; given back after on_train_begin when fit resumes from one.
  virtual CallbackState state() const { return {}; }
  virtual void restore_state(const CallbackState& /*state*/) {}

 private:
  Model* model_ = nullptr;
  FitParams params_;
};

using CallbackPtr = std::shared_ptr<Callback>;

namespace callbacks {

enum class Mode { Auto, Min, Max };  // auto: max for a name with "acc" or "auc" in it, else min

struct EarlyStoppingOptions {
  std::string monitor = "val_loss";
  double min_delta = 0.0;  // an improvement must beat the best by more than this
  int patience = 0;        // epochs without improvement before stopping
  Mode mode = Mode::Auto;
  std::optional<double> baseline = {};
  bool restore_best_weights = false;  // at the end of training, on every replica
  int start_from_epoch = 0;           // epochs before this are not monitored
  int verbose = 0;
};
CallbackPtr EarlyStopping(const EarlyStoppingOptions& options = {});

// One row per epoch ("epoch" (0-based), then every value sorted by name, as Keras's CSVLogger),
// flushed as it is written, so the rows of finished epochs survive a crash later in training. A run
// resumed from a backup cuts the file back to the rows the backup had seen and appends from there.
CallbackPtr CSVLogger(const std::string& path, bool append = false, char separator = ',');

// fn(epoch (0-based), current rate) -> the rate for the epoch, set at each epoch's beginning.
CallbackPtr LearningRateScheduler(std::function<float(int, float)> fn, int verbose = 0);

struct ReduceLROnPlateauOptions {
  std::string monitor = "val_loss";
  double factor = 0.1;  // new rate = rate * factor, in (0, 1)
  int patience = 10;
  Mode mode = Mode::Auto;
  double min_delta = 1e-4;
  int cooldown = 0;
  double min_lr = 0.0;
  int verbose = 0;
};
CallbackPtr ReduceLROnPlateau(const ReduceLROnPlateauOptions& options = {});

// Stops training at the first batch whose loss is not finite (Keras's message), instead of fit()
// throwing NumericalError. The update of that batch is not applied either way.
CallbackPtr TerminateOnNaN();

struct LambdaHooks {
  std::function<void()> on_train_begin = {}, on_train_end = {};
  std::function<void(int)> on_epoch_begin = {};
  std::function<void(int, EpochLog&)> on_epoch_end = {};
  std::function<void(int64_t)> on_train_batch_begin = {};
  std::function<void(int64_t, const MetricValues*)> on_train_batch_end = {};
};
CallbackPtr LambdaCallback(LambdaHooks hooks);

}  // namespace callbacks
}  // namespace mirror
