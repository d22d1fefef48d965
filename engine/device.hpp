// Devices and their discovery. A Device names one physical processor a replica can run on:
// the host CPU, or one CUDA GPU as numbered after CUDA_VISIBLE_DEVICES.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace mirror {

enum class DeviceKind { CPU, GPU };

struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int index = 0;                 // ordinal among devices of this kind
  std::string description;       // "Intel(R) Xeon(R) ...", "NVIDIA H200"
  int64_t memory_bytes = 0;      // total memory (host RAM for the CPU)
  int compute_major = 0;         // GPU compute capability; 0 for the CPU
  int compute_minor = 0;
  std::string pci_bus_id;        // GPUs: "0000:3b:00.0", how the driver's tools (NVML) name it

  // TensorFlow's naming: "/physical_device:GPU:0".
  std::string name() const;
  friend bool operator==(const Device& a, const Device& b) { return a.kind == b.kind && a.index == b.index; }
};

std::ostream& operator<<(std::ostream& out, const Device& d);
std::string to_string(DeviceKind kind);

// Lists the devices of `kind` this process can use. GPUs are those the CUDA runtime reports
// (honouring CUDA_VISIBLE_DEVICES); the list is empty when Mirror was built without CUDA, no
// driver is installed or no GPU is visible -- gpu_unavailable_reason() says which.
std::vector<Device> list_physical_devices(DeviceKind kind);

// Why list_physical_devices(GPU) is empty, in words a user can act on; empty when GPUs exist.
std::string gpu_unavailable_reason();

// Number of hardware threads of the host (at least 1).
int host_thread_count();

// How many host threads (and host replicas, which hold at least one each) one process may ask for:
// kHostThreadsPerHardwareThread x host_thread_count(). Past the cores, threads only take turns
// (10,000 threads spent minutes on 200 samples) and past some tens of thousands libgomp crashes.
inline constexpr int kHostThreadsPerHardwareThread = 4;
int host_thread_limit();

}  // namespace mirror
