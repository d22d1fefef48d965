// fit's end-of-fit report (see fit_report.hpp).
#include "mirror/model/fit_report.hpp"

#include <algorithm>
#include <cstdio>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace mirror {

void StepTimes::start(int replicas) {
  replicas_.assign(static_cast<size_t>(replicas), {});
  steps_ = samples_ = slowest_ns_ = 0;
}

void StepTimes::add(const ModelRuntime& runtime, const GradientReducer& reducer, int64_t rows) {
  // On the host a collective returns when the last replica has arrived: the replica that spent
  // least time in them waited for nobody, and the others' excess is waiting for the slowest.
  int64_t least = INT64_MAX, slowest = 0;
  for (size_t r = 0; r < replicas_.size(); ++r) {
    least = std::min(least, reducer.collective_ns(static_cast<int>(r)));
    slowest = std::max(slowest, runtime.last_step_ns(static_cast<int>(r)));
  }
  for (size_t r = 0; r < replicas_.size(); ++r) {
    const int64_t step = runtime.last_step_ns(static_cast<int>(r));
    const int64_t collective = std::min(step, reducer.collective_ns(static_cast<int>(r)));
    Replica& t = replicas_[r];
    t.step_ns += step;
    t.compute_ns += step - collective;
    t.all_reduce_ns += std::min(least, collective);
    t.waiting_ns += collective - std::min(least, collective);
  }
  ++steps_;
  samples_ += rows;
  slowest_ns_ += slowest;
}

void StepTimes::watch_devices(const Strategy& strategy) {
  monitored_.clear();
  std::vector<Device> gpus;
  for (const Device& d : strategy.devices())
    if (d.kind == DeviceKind::GPU && std::find(monitored_.begin(), monitored_.end(), d.index) == monitored_.end()) {
      monitored_.push_back(d.index);
      gpus.push_back(d);
    }
  monitor_ = gpus.empty() ? nullptr : std::make_unique<GpuMonitor>(std::move(gpus));
}

FitReport StepTimes::report(const Strategy& strategy) {
  const std::vector<GpuMonitor::Reading> readings = monitor_ ? monitor_->stop() : std::vector<GpuMonitor::Reading>{};
  monitor_.reset();
  FitReport report;
  report.steps = steps_;
  if (steps_ == 0) return report;
  report.step_seconds = double(slowest_ns_) * 1e-9 / double(steps_);
  report.samples_per_second = slowest_ns_ > 0 ? double(samples_) / (double(slowest_ns_) * 1e-9) : 0.0;
  for (size_t r = 0; r < replicas_.size(); ++r) {
    const Replica& t = replicas_[r];
    const double total = std::max<double>(double(t.step_ns), 1.0);
    report.replicas.push_back({.replica = strategy.first_global_replica() + static_cast<int>(r),
                               .device = strategy.device(static_cast<int>(r)).name(),
                               .compute = double(t.compute_ns) / total,
                               .all_reduce = double(t.all_reduce_ns) / total,
                               .waiting = double(t.waiting_ns) / total,
                               .device_utilisation = std::nullopt,
                               .device_peak_memory_bytes = std::nullopt});
    const Device& d = strategy.device(static_cast<int>(r));
    const auto gpu = std::find(monitored_.begin(), monitored_.end(), d.index);
    if (d.kind != DeviceKind::GPU || gpu == monitored_.end()) continue;
    const GpuMonitor::Reading& reading = readings[static_cast<size_t>(gpu - monitored_.begin())];
    if (!reading.available) continue;
    report.replicas.back().device_utilisation = reading.utilisation;
    report.replicas.back().device_peak_memory_bytes = reading.peak_memory_bytes;
  }
  return report;
}

void print_report(const FitReport& report, std::ostream& out) {
  if (report.steps == 0) return;
  char line[256];
  std::snprintf(line, sizeof line, "Where the step's time went (%lld training steps, %.3f ms each):\n",
                static_cast<long long>(report.steps), report.step_seconds * 1e3);
  out << line;
  size_t width = 6;
  for (const ReplicaTimeShares& r : report.replicas) width = std::max(width, r.device.size());
  const bool gpus = std::any_of(report.replicas.begin(), report.replicas.end(),
                                [](const ReplicaTimeShares& r) { return r.device_utilisation.has_value(); });
  std::snprintf(line, sizeof line, "  replica  %-*s  %8s  %10s  %8s%s\n", static_cast<int>(width), "device", "compute",
                "all-reduce", "waiting", gpus ? "  GPU busy  peak memory" : "");
  out << line;
  for (const ReplicaTimeShares& r : report.replicas) {
    std::snprintf(line, sizeof line, "  %7d  %-*s  %7.1f%%  %9.1f%%  %7.1f%%", r.replica, static_cast<int>(width),
                  r.device.c_str(), 100 * r.compute, 100 * r.all_reduce, 100 * r.waiting);
    out << line;
    if (r.device_utilisation) {
      std::snprintf(line, sizeof line, "  %7.1f%%  %7.2f GiB", 100 * *r.device_utilisation,
                    double(r.device_peak_memory_bytes.value_or(0)) / double(int64_t{1} << 30));
      out << line;
    }
    out << '\n';
  }
  std::snprintf(line, sizeof line, "  %.0f samples/s\n", report.samples_per_second);
  out << line;
  // The seed's question, answered in words: was the GPU really busy? (Once per device.)
  std::vector<std::string> said;
  for (const ReplicaTimeShares& r : report.replicas) {
    if (!r.device_utilisation || *r.device_utilisation >= 0.5 ||
        std::find(said.begin(), said.end(), r.device) != said.end())
      continue;
    said.push_back(r.device);
    std::snprintf(line, sizeof line, "  %s was busy %.0f%% of the fit: the input pipeline or the host is the bottleneck\n",
                  r.device.c_str(), 100 * *r.device_utilisation);
    out << line;
  }
}

}  // namespace mirror
