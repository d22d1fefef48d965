// GpuMonitor (see gpu_monitor.hpp): NVML loaded with dlopen, its few calls declared here (NVML's
// C ABI is stable), and a sampling thread.
#include "mirror/engine/gpu_monitor.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace mirror {
namespace {

using NvmlDevice = void*;
struct NvmlUtilization {
  unsigned int gpu, memory;  // percent of the last sample period
};
struct NvmlMemory {
  unsigned long long total, free, used;  // bytes
};

// The NVML entry points the monitor uses, or none when the library is missing.
struct Nvml {
  int (*init)() = nullptr;
  int (*shutdown)() = nullptr;
  int (*by_index)(unsigned int, NvmlDevice*) = nullptr;
  int (*by_uuid)(const char*, NvmlDevice*) = nullptr;
  int (*by_pci_bus_id)(const char*, NvmlDevice*) = nullptr;
  int (*utilization)(NvmlDevice, NvmlUtilization*) = nullptr;
  int (*memory)(NvmlDevice, NvmlMemory*) = nullptr;

  // Loads NVML once per process (never unloaded: a driver library) and initialises it; false
  // when it is missing or fails.
  static const Nvml* get() {
    static const Nvml nvml = load();
    return nvml.init ? &nvml : nullptr;
  }

 private:
  template <typename F>
  static void bind(void* lib, const char* name, F& f) {
    f = reinterpret_cast<F>(dlsym(lib, name));
  }
  static Nvml load() {
    Nvml n;
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return n;
    bind(lib, "nvmlInit_v2", n.init);
    bind(lib, "nvmlShutdown", n.shutdown);
    bind(lib, "nvmlDeviceGetHandleByIndex_v2", n.by_index);
    bind(lib, "nvmlDeviceGetHandleByUUID", n.by_uuid);
    bind(lib, "nvmlDeviceGetHandleByPciBusId_v2", n.by_pci_bus_id);
    bind(lib, "nvmlDeviceGetUtilizationRates", n.utilization);
    bind(lib, "nvmlDeviceGetMemoryInfo", n.memory);
    if (!n.init || !n.by_index || !n.by_uuid || !n.utilization || !n.memory || n.init() != 0) n.init = nullptr;
    return n;
  }
};

// NVML's handle of `gpu`: by its PCI bus id, or by the CUDA ordinal following CUDA_VISIBLE_DEVICES.
NvmlDevice nvml_device(const Nvml& nvml, const Device& gpu) {
  NvmlDevice device = nullptr;
  if (!gpu.pci_bus_id.empty() && nvml.by_pci_bus_id)
    return nvml.by_pci_bus_id(gpu.pci_bus_id.c_str(), &device) == 0 ? device : nullptr;
  const int ordinal = gpu.index;
  std::string entry = std::to_string(ordinal);
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string list = visible;
    for (int i = 0; i < ordinal && !list.empty(); ++i) {
      const size_t comma = list.find(',');
      list = comma == std::string::npos ? std::string() : list.substr(comma + 1);
    }
    entry = list.substr(0, list.find(','));
  }
  const bool uuid = entry.rfind("GPU-", 0) == 0 || entry.rfind("MIG-", 0) == 0;
  char* end = nullptr;
  const long index = std::strtol(entry.c_str(), &end, 10);
  const int status = uuid ? nvml.by_uuid(entry.c_str(), &device)
                          : (!entry.empty() && *end == '\0' && index >= 0 ? nvml.by_index(static_cast<unsigned>(index), &device)
                                                                          : -1);
  return status == 0 ? device : nullptr;
}

}  // namespace

struct GpuMonitor::Gpu {
  NvmlDevice device = nullptr;
  double utilisation_sum = 0;
  int64_t samples = 0;
  int64_t peak_memory_bytes = 0;
};

GpuMonitor::GpuMonitor(std::vector<Device> gpus, std::chrono::milliseconds interval) : interval_(interval) {
  const Nvml* nvml = Nvml::get();
  for (const Device& gpu : gpus) gpus_.push_back({nvml ? nvml_device(*nvml, gpu) : nullptr, 0, 0, 0});
  if (std::none_of(gpus_.begin(), gpus_.end(), [](const Gpu& g) { return g.device != nullptr; })) return;
  thread_ = std::thread([this] {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      sample();
      wake_.wait_for(lock, interval_, [this] { return stopping_; });
    }
  });
}

GpuMonitor::~GpuMonitor() { stop(); }

void GpuMonitor::sample() {
  const Nvml* nvml = Nvml::get();
  for (Gpu& g : gpus_) {
    NvmlUtilization u{};
    NvmlMemory m{};
    if (!g.device || nvml->utilization(g.device, &u) != 0 || nvml->memory(g.device, &m) != 0) continue;
    g.utilisation_sum += u.gpu / 100.0;
    ++g.samples;
    g.peak_memory_bytes = std::max(g.peak_memory_bytes, static_cast<int64_t>(m.used));
  }
}

std::vector<GpuMonitor::Reading> GpuMonitor::stop() {
  if (thread_.joinable()) {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
    sample();
  }
  std::vector<Reading> readings;
  for (const Gpu& g : gpus_)
    readings.push_back({g.samples > 0, g.samples > 0 ? g.utilisation_sum / double(g.samples) : 0.0, g.peak_memory_bytes});
  return readings;
}

}  // namespace mirror
