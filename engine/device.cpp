// Device discovery: the host CPU from /proc/cpuinfo and sysconf, GPUs through the CUDA seam in
// engine/gpu_runtime.hpp, and TensorFlow-style names and printing so users recognise the output.
#include "mirror/engine/device.hpp"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "mirror/engine/gpu_runtime.hpp"

namespace mirror {
namespace {

// The "model name" line of /proc/cpuinfo (x86); other architectures may lack it, hence "CPU".
std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const auto begin = line.find_first_not_of(" \t", colon + 1);
    if (begin == std::string::npos) continue;
    const auto end = line.find_last_not_of(" \t\r");
    return line.substr(begin, end - begin + 1);
  }
  return "CPU";
}

int64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return 0;
  return static_cast<int64_t>(pages) * static_cast<int64_t>(page_size);
}

Device host_cpu() {
  Device d;
  d.kind = DeviceKind::CPU;
  d.index = 0;
  d.description = cpu_model_name();
  d.memory_bytes = physical_memory_bytes();
  return d;
}

std::string gibibytes(int64_t num_bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f GiB", static_cast<double>(num_bytes) / (1024.0 * 1024.0 * 1024.0));
  return text;
}

}  // namespace

std::string to_string(DeviceKind kind) { return kind == DeviceKind::GPU ? "GPU" : "CPU"; }

std::string Device::name() const { return "/physical_device:" + to_string(kind) + ":" + std::to_string(index); }

std::ostream& operator<<(std::ostream& out, const Device& d) {
  out << "PhysicalDevice(name='" << d.name() << "', device_type='" << to_string(d.kind) << "'";
  if (!d.description.empty()) out << ", description='" << d.description << "'";
  if (d.memory_bytes > 0) out << ", memory=" << gibibytes(d.memory_bytes);
  if (d.kind == DeviceKind::GPU) out << ", compute_capability=" << d.compute_major << '.' << d.compute_minor;
  return out << ')';
}

std::vector<Device> list_physical_devices(DeviceKind kind) {
  if (kind == DeviceKind::CPU) return {host_cpu()};
  std::string why;
  return gpu::list_devices(why);
}

std::string gpu_unavailable_reason() {
  std::string why;
  const auto gpus = gpu::list_devices(why);
  return gpus.empty() ? why : std::string();
}

int host_thread_count() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int host_thread_limit() { return kHostThreadsPerHardwareThread * host_thread_count(); }

}  // namespace mirror
