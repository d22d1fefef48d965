// StepTimes: fit's accounting of where its training steps spent their time, one step at a time
// from the replicas' own clocks, into the end-of-fit report (FitReport, history.hpp). Private to
// model/. Nothing here allocates once start() has run, so the steady state stays allocation-free.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <vector>

#include "mirror/engine/gpu_monitor.hpp"
#include "mirror/model/history.hpp"
#include "mirror/model/runtime.hpp"

namespace mirror {

class StepTimes {
 public:
  void start(int replicas);
  // After a training step of `rows` samples has run on every replica.
  void add(const ModelRuntime& runtime, const GradientReducer& reducer, int64_t rows);
  FitReport report(const Strategy& strategy);
  // Starts sampling the strategy's GPUs (nothing on the host); report() stops it and adds its readings.
  void watch_devices(const Strategy& strategy);

 private:
  struct Replica {
    int64_t step_ns = 0, compute_ns = 0, all_reduce_ns = 0, waiting_ns = 0;
  };
  std::vector<Replica> replicas_;
  std::unique_ptr<GpuMonitor> monitor_;
  std::vector<int> monitored_;  // the CUDA ordinals monitor_ samples
  int64_t steps_ = 0, samples_ = 0, slowest_ns_ = 0;
};

// The report as a short table: a line per replica with its shares, then the totals.
void print_report(const FitReport& report, std::ostream& out);

}  // namespace mirror
