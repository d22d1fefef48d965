// Lists the devices Mirror can train on, then the GPU software versions and any problem with them:
// the C++ counterpart of `print(tf.config.list_physical_devices('GPU'))`. Exits 0 without GPUs,
// 2 for an unknown flag.
#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>

#include "mirror/mirror.hpp"

int main(int argc, char** argv) {
  CLI::App app{"list_devices: the devices Mirror can train on and the GPU software versions", "list_devices"};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // 0 after --help; 2 for bad usage, as the other examples
  }
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
