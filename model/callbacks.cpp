// Keras 3's callbacks (see callbacks.hpp): the same decisions, on the same values, at the same hooks.
#include "mirror/model/callbacks.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>

#include "mirror/engine/error.hpp"
#include "mirror/model/model.hpp"

namespace mirror {

Model& Callback::model() const {
  MIRROR_REQUIRE(model_ != nullptr, InvalidArgument, "a callback's model is known only while fit() runs");
  return *model_;
}

namespace callbacks {
namespace {

bool maximizes(Mode mode, const std::string& monitor) {
  if (mode != Mode::Auto) return mode == Mode::Max;
  return monitor.find("acc") != std::string::npos || monitor.find("auc") != std::string::npos;
}

// Keras warns when a monitored value is missing; a val_ value is missing by design on the epochs
// validation_freq skips, so only a name no epoch will have is reported (once).
bool monitored(const Callback& c, const char* who, const std::string& monitor, const EpochLog& log, bool& warned) {
  if (log.has(monitor)) return true;
  const bool validation_later = monitor.rfind("val_", 0) == 0 && c.params().has_validation;
  if (!warned && !validation_later) {
    *c.params().out << who << " monitors '" << monitor << "', which the epoch's values do not have; they are:";
    for (const auto& [name, value] : log.values) *c.params().out << ' ' << name;
    *c.params().out << '\n';
    warned = true;
  }
  return false;
}

float current_learning_rate(const Model& model) { return model.optimizer().learning_rate(model.iterations()); }

// Keras's EarlyStopping: stops once `monitor` has not improved by min_delta for `patience` epochs.
class EarlyStoppingCallback final : public Callback {
 public:
  explicit EarlyStoppingCallback(const EarlyStoppingOptions& o) : o_(o), max_(maximizes(o.mode, o.monitor)) {
    MIRROR_REQUIRE(o.patience >= 0 && o.start_from_epoch >= 0, InvalidArgument,
                   "EarlyStopping's patience and start_from_epoch must be >= 0");
  }
  void on_train_begin() override {
    wait_ = 0;
    stopped_epoch_ = 0;
    best_.reset();
    best_weights_.clear();
    best_epoch_ = 0;
  }
  void on_epoch_end(int epoch, EpochLog& log) override {
    if (!monitored(*this, "EarlyStopping", o_.monitor, log, warned_) || epoch < o_.start_from_epoch) return;
    const double current = log.get(o_.monitor);
    if (o_.restore_best_weights && best_weights_.empty()) {  // the first monitored epoch is the best so far
      best_weights_ = model().get_weights();
      best_epoch_ = epoch;
    }
    ++wait_;
    if (improves(current, best_)) {
      best_ = current;
      best_epoch_ = epoch;
      if (o_.restore_best_weights) best_weights_ = model().get_weights();
      if (!o_.baseline || improves(current, o_.baseline)) wait_ = 0;
      return;
    }
    if (wait_ >= o_.patience && epoch > 0) {
      stopped_epoch_ = epoch;
      model().set_stop_training(true);
    }
  }
  void on_train_end() override {
    std::ostream& out = *params().out;
    if (stopped_epoch_ > 0 && o_.verbose > 0) out << "Epoch " << stopped_epoch_ + 1 << ": early stopping\n";
    if (!o_.restore_best_weights || best_weights_.empty()) return;
    if (o_.verbose > 0) out << "Restoring model weights from the end of the best epoch: " << best_epoch_ + 1 << ".\n";
    model().set_weights(best_weights_);  // every replica's
  }
  CallbackState state() const override {
    return {.numbers = {double(wait_), double(stopped_epoch_), double(best_epoch_), double(warned_),
                        best_ ? *best_ : std::nan("")},
            .floats = best_weights_};
  }
  void restore_state(const CallbackState& s) override {
    MIRROR_REQUIRE(s.numbers.size() == 5, DataError, "the backup's EarlyStopping state has ", s.numbers.size(),
                   " numbers, not 5");
    wait_ = static_cast<int>(s.numbers[0]);
    stopped_epoch_ = static_cast<int>(s.numbers[1]);
    best_epoch_ = static_cast<int>(s.numbers[2]);
    warned_ = s.numbers[3] != 0;
    best_ = std::isnan(s.numbers[4]) ? std::nullopt : std::optional<double>(s.numbers[4]);
    best_weights_ = s.floats;
  }

 private:
  bool improves(double value, const std::optional<double>& reference) const {
    if (!reference) return true;
    const double delta = std::abs(o_.min_delta);
    return max_ ? value - delta > *reference : value + delta < *reference;
  }

  EarlyStoppingOptions o_;
  bool max_;
  int wait_ = 0, stopped_epoch_ = 0, best_epoch_ = 0;
  bool warned_ = false;
  std::optional<double> best_;
  std::vector<float> best_weights_;
};

class CSVLoggerCallback final : public Callback {
 public:
  CSVLoggerCallback(std::string path, bool append, char separator)
      : path_(std::move(path)), append_(append), separator_(separator) {}
  void on_train_begin() override {
    const bool append = append_ || params().resumed;
    header_written_ = append && std::filesystem::exists(path_) && std::filesystem::file_size(path_) > 0;
    file_.open(path_, append ? std::ios::app : std::ios::trunc);
    MIRROR_REQUIRE(file_.is_open(), Error, "CSVLogger cannot open '", path_, "' for writing");
    file_ << std::setprecision(std::numeric_limits<double>::max_digits10);  // as Python writes a float: exactly
    keys_.clear();
  }
  void on_epoch_end(int epoch, EpochLog& log) override {
    if (keys_.empty()) {
      for (const auto& [name, value] : log.values) keys_.push_back(name);
      // With validation_freq > 1 the first epoch has no val_ values: make room for them.
      const bool has_val = std::any_of(keys_.begin(), keys_.end(), [](auto& k) { return k.rfind("val_", 0) == 0; });
      if (!has_val && params().has_validation) {
        const size_t n = keys_.size();
        for (size_t i = 0; i < n; ++i)
          if (keys_[i] != "learning_rate") keys_.push_back("val_" + keys_[i]);
      }
      std::sort(keys_.begin(), keys_.end());
      if (!header_written_) {
        file_ << "epoch";
        for (const std::string& k : keys_) file_ << separator_ << k;
        file_ << '\n';
        header_written_ = true;
      }
    }
    file_ << epoch;
    for (const std::string& k : keys_) {
      file_ << separator_;
      if (log.has(k)) {
        file_ << log.get(k);
      } else {
        file_ << "NA";
      }
    }
    file_ << '\n';
    file_.flush();
    MIRROR_REQUIRE(file_.good(), Error, "CSVLogger could not write to '", path_, "'");
  }
  void on_train_end() override { file_.close(); }
  // The file's length when the backup was taken: rows written after it (an epoch that ended after
  // the backup, in the process that died) are cut off on resuming, so no row appears twice.
  CallbackState state() const override {
    const double bytes = std::filesystem::exists(path_) ? double(std::filesystem::file_size(path_)) : 0.0;
    return {.numbers = {bytes, double(header_written_)}, .floats = {}};
  }
  void restore_state(const CallbackState& s) override {
    MIRROR_REQUIRE(s.numbers.size() == 2, DataError, "the backup's CSVLogger state has ", s.numbers.size(),
                   " numbers, not 2");
    const auto bytes = static_cast<uintmax_t>(s.numbers[0]);
    file_.close();
    if (std::filesystem::exists(path_) && std::filesystem::file_size(path_) > bytes)
      std::filesystem::resize_file(path_, bytes);
    file_.open(path_, std::ios::app);
    MIRROR_REQUIRE(file_.is_open(), Error, "CSVLogger cannot open '", path_, "' for writing");
    file_ << std::setprecision(std::numeric_limits<double>::max_digits10);
    header_written_ = s.numbers[1] != 0 && bytes > 0;
  }

 private:
  std::string path_;
  bool append_;
  char separator_;
  bool header_written_ = false;
  std::ofstream file_;
  std::vector<std::string> keys_;
};

class LearningRateSchedulerCallback final : public Callback {
 public:
  LearningRateSchedulerCallback(std::function<float(int, float)> fn, int verbose) : fn_(std::move(fn)), verbose_(verbose) {
    MIRROR_REQUIRE(fn_ != nullptr, InvalidArgument, "LearningRateScheduler needs a function");
  }
  void on_epoch_begin(int epoch) override {
    const float rate = fn_(epoch, current_learning_rate(model()));
    MIRROR_REQUIRE(std::isfinite(rate), InvalidArgument, "LearningRateScheduler's function returned ", rate,
                   " for epoch ", epoch);
    model().optimizer().set_learning_rate(rate);
    if (verbose_ > 0)
      *params().out << "\nEpoch " << epoch + 1 << ": LearningRateScheduler setting learning rate to " << rate << ".\n";
  }
  void on_epoch_end(int, EpochLog& log) override { log.set("learning_rate", current_learning_rate(model())); }

 private:
  std::function<float(int, float)> fn_;
  int verbose_;
};

class ReduceLROnPlateauCallback final : public Callback {
 public:
  explicit ReduceLROnPlateauCallback(const ReduceLROnPlateauOptions& o) : o_(o), max_(maximizes(o.mode, o.monitor)) {
    MIRROR_REQUIRE(o.factor > 0 && o.factor < 1, InvalidArgument, "ReduceLROnPlateau's factor must be in (0, 1), got ",
                   o.factor);
    MIRROR_REQUIRE(o.patience >= 0 && o.cooldown >= 0 && o.min_lr >= 0, InvalidArgument,
                   "ReduceLROnPlateau's patience, cooldown and min_lr must be >= 0");
  }
  void on_train_begin() override {
    best_ = max_ ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
    cooldown_counter_ = 0;
    wait_ = 0;
  }
  void on_epoch_end(int epoch, EpochLog& log) override {
    log.set("learning_rate", current_learning_rate(model()));
    if (!monitored(*this, "ReduceLROnPlateau", o_.monitor, log, warned_)) return;
    const double current = log.get(o_.monitor);
    if (cooldown_counter_ > 0) {
      --cooldown_counter_;
      wait_ = 0;
    }
    if (max_ ? current > best_ + o_.min_delta : current < best_ - o_.min_delta) {
      best_ = current;
      wait_ = 0;
    } else if (cooldown_counter_ <= 0 && ++wait_ >= o_.patience) {
      const double old_lr = current_learning_rate(model());
      if (old_lr > static_cast<float>(o_.min_lr)) {
        const auto new_lr = static_cast<float>(std::max(old_lr * o_.factor, o_.min_lr));
        model().optimizer().set_learning_rate(new_lr);
        if (o_.verbose > 0)
          *params().out << "\nEpoch " << epoch + 1 << ": ReduceLROnPlateau reducing learning rate to " << new_lr << ".\n";
        cooldown_counter_ = o_.cooldown;
        wait_ = 0;
      }
    }
  }
  CallbackState state() const override {
    return {.numbers = {best_, double(cooldown_counter_), double(wait_), double(warned_)}, .floats = {}};
  }
  void restore_state(const CallbackState& s) override {
    MIRROR_REQUIRE(s.numbers.size() == 4, DataError, "the backup's ReduceLROnPlateau state has ", s.numbers.size(),
                   " numbers, not 4");
    best_ = s.numbers[0];
    cooldown_counter_ = static_cast<int>(s.numbers[1]);
    wait_ = static_cast<int>(s.numbers[2]);
    warned_ = s.numbers[3] != 0;
  }

 private:
  ReduceLROnPlateauOptions o_;
  bool max_;
  double best_ = 0;
  int cooldown_counter_ = 0, wait_ = 0;
  bool warned_ = false;
};

class TerminateOnNaNCallback final : public Callback {
 public:
  void on_train_batch_end(int64_t batch, const MetricValues* logs) override {
    if (!logs || logs->empty() || std::isfinite(logs->front().second)) return;  // "loss" comes first
    *params().out << "Batch " << batch << ": Invalid loss, terminating training\n";
    model().set_stop_training(true);
  }
};

class LambdaCallbackImpl final : public Callback {
 public:
  explicit LambdaCallbackImpl(LambdaHooks hooks) : h_(std::move(hooks)) {}
  void on_train_begin() override {
    if (h_.on_train_begin) h_.on_train_begin();
  }
  void on_train_end() override {
    if (h_.on_train_end) h_.on_train_end();
  }
  void on_epoch_begin(int epoch) override {
    if (h_.on_epoch_begin) h_.on_epoch_begin(epoch);
  }
  void on_epoch_end(int epoch, EpochLog& log) override {
    if (h_.on_epoch_end) h_.on_epoch_end(epoch, log);
  }
  void on_train_batch_begin(int64_t batch) override {
    if (h_.on_train_batch_begin) h_.on_train_batch_begin(batch);
  }
  void on_train_batch_end(int64_t batch, const MetricValues* logs) override {
    if (h_.on_train_batch_end) h_.on_train_batch_end(batch, logs);
  }

 private:
  LambdaHooks h_;
};

}  // namespace

CallbackPtr EarlyStopping(const EarlyStoppingOptions& options) { return std::make_shared<EarlyStoppingCallback>(options); }
CallbackPtr CSVLogger(const std::string& path, bool append, char separator) {
  return std::make_shared<CSVLoggerCallback>(path, append, separator);
}
CallbackPtr LearningRateScheduler(std::function<float(int, float)> fn, int verbose) {
  return std::make_shared<LearningRateSchedulerCallback>(std::move(fn), verbose);
}
CallbackPtr ReduceLROnPlateau(const ReduceLROnPlateauOptions& options) {
  return std::make_shared<ReduceLROnPlateauCallback>(options);
}
CallbackPtr TerminateOnNaN() { return std::make_shared<TerminateOnNaNCallback>(); }
CallbackPtr LambdaCallback(LambdaHooks hooks) { return std::make_shared<LambdaCallbackImpl>(std::move(hooks)); }

}  // namespace callbacks
}  // namespace mirror
