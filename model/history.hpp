// What fit() returns and callbacks see: each epoch's values by their Keras names.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mirror {

// Named values in the order Keras reports them: "loss", then each metric by name (then "val_...").
using MetricValues = std::vector<std::pair<std::string, double>>;

struct EpochLog {
  int epoch = 0;                    // 1-based
  double loss = 0, accuracy = 0;    // means over the epoch's samples ("accuracy": 0 when not compiled with it)
  double seconds = 0, samples_per_second = 0;
  std::optional<double> val_loss, val_accuracy;
  // Every metric by its Keras name, then the val_ ones (epochs that validated), then
  // "learning_rate" (the optimizer's rate at the epoch's end); callbacks may add more.
  MetricValues values;
  // Whether `values` holds `name`.
  bool has(const std::string& name) const;
  // The value named `name` ("loss", "accuracy", "val_loss", ...); throws InvalidArgument if absent.
  double get(const std::string& name) const;
  // Sets the value named `name`, appending it when absent.
  void set(const std::string& name, double value);
};

struct History {
  std::vector<EpochLog> epochs;
};

}  // namespace mirror
