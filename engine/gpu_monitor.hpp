// GpuMonitor: samples some GPUs' utilisation and memory in use through NVML while it runs (one
// thread, every `interval`), for fit's end-of-fit report. NVML is the driver's
// (libnvidia-ml.so.1), loaded at run time: without it (no driver, no GPU) the monitor measures
// nothing and says so, and Mirror needs no NVML to build or run.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "mirror/engine/device.hpp"

namespace mirror {

class GpuMonitor {
 public:
  struct Reading {
    bool available = false;         // NVML answered for this GPU
    double utilisation = 0;         // mean over the samples of the share of time a kernel ran, 0..1
    int64_t peak_memory_bytes = 0;  // the most memory in use on the device (every process's)
  };

  // `gpus`: GPU devices from list_physical_devices. NVML numbers GPUs its own way; each is found
  // by its PCI bus id, or, where that is unknown, by its CUDA ordinal following
  // CUDA_VISIBLE_DEVICES (indices or UUIDs), CUDA's order being taken as NVML's (true with
  // CUDA_DEVICE_ORDER=PCI_BUS_ID, and on machines of one GPU model).
  explicit GpuMonitor(std::vector<Device> gpus, std::chrono::milliseconds interval = std::chrono::milliseconds(100));
  ~GpuMonitor();
  GpuMonitor(const GpuMonitor&) = delete;
  GpuMonitor& operator=(const GpuMonitor&) = delete;

  // Stops sampling (once a last sample is taken) and returns a reading per GPU given.
  std::vector<Reading> stop();

 private:
  struct Gpu;
  void sample();

  std::vector<Gpu> gpus_;
  std::chrono::milliseconds interval_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;  // under mutex_
  std::thread thread_;
};

}  // namespace mirror
