// Lists the devices Mirror can train on, then the GPU software versions and any problem with them:
// the C++ counterpart of `print(tf.config.list_physical_devices('GPU'))`. Exits 0 without GPUs.
#include <exception>
#include <iostream>

#include "mirror.hpp"

int main() {
  try {
    using mirror::DeviceKind;
    for (const auto& d : mirror::list_physical_devices(DeviceKind::CPU)) std::cout << d << '\n';
    const auto gpus = mirror::list_physical_devices(DeviceKind::GPU);
    for (const auto& d : gpus) std::cout << d << '\n';
    if (gpus.empty()) std::cout << "no GPU: " << mirror::gpu_unavailable_reason() << '\n';
    std::cout << '\n' << mirror::gpu::version_report();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "list_devices: " << e.what() << '\n';
    return 1;
  }
}
