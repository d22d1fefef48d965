// What fit() returns and callbacks see: each epoch's values by their Keras names.
#pragma once

#include <cstdint>
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

// Where one replica's training steps spent their time during a fit, as shares of its steps' time.
struct ReplicaTimeShares {
  int replica = 0;          // global rank
  std::string device;
  double compute = 0;       // its own work: gathering, layers, loss, optimizer
  double all_reduce = 0;    // in the all-reduces, as long as the replica that waited least
  double waiting = 0;       // in the all-reduces beyond that: waiting for the slowest replica
  // GPUs, when NVML answers: the device's mean utilisation during the fit (0..1, NVML's share of
  // time a kernel ran) and the most memory in use on it (every process's, bytes).
  std::optional<double> device_utilisation;
  std::optional<int64_t> device_peak_memory_bytes;
};

// fit's end-of-fit report over its training steps (printed at verbose >= 1).
struct FitReport {
  int64_t steps = 0;
  double step_seconds = 0;        // mean over the steps of the slowest replica's step
  double samples_per_second = 0;  // samples over the sum of those step times
  std::vector<ReplicaTimeShares> replicas;  // this process's replicas
};

struct History {
  std::vector<EpochLog> epochs;
  FitReport report;
};

}  // namespace mirror
