// The GPU seam on the core's side: without CUDA every entry point says how to get a CUDA build;
// with it, each one goes through the CUDA module (cuda_module.hpp), loaded when first needed.
#include "mirror/engine/gpu_runtime.hpp"

#include "mirror/engine/cuda_module.hpp"
#include "mirror/engine/error.hpp"

namespace mirror::gpu {
namespace {

#ifdef MIRROR_CUDA_MODULE_FILE
constexpr bool kBuiltWithCuda = true;
constexpr const char* kNoCuda = "";
#else
constexpr bool kBuiltWithCuda = false;
// MIRROR_CUDA_OPTION is the value of Meson's -Dcuda when this build was configured.
constexpr const char* kNoCuda =
    "this build of Mirror has no CUDA backend (configured with -Dcuda=" MIRROR_CUDA_OPTION
    "; with -Dcuda=auto that means nvcc was not found): install the CUDA toolkit, put nvcc on PATH "
    "and rebuild with -Dcuda=enabled";
#endif

const EngineModule* engine_module(std::string& why_not) {
  return static_cast<const EngineModule*>(module_table(kEngineModuleEntry, why_not));
}

}  // namespace

bool built_with_cuda() { return kBuiltWithCuda; }

std::vector<Device> list_devices(std::string& why_none) {
  why_none.clear();
  if (!kBuiltWithCuda) {
    why_none = kNoCuda;
    return {};
  }
  // No driver, no GPU: say so without loading the CUDA libraries.
  if (!nvidia_driver_present()) {
    why_none = "no NVIDIA driver found (no /proc/driver/nvidia/version, /dev/nvidiactl or /dev/dxg): install the "
               "NVIDIA driver on a machine with a GPU (`nvidia-smi` should then list it); in a container, start "
               "it with the GPU runtime (e.g. `docker run --gpus all`)";
    return {};
  }
  const EngineModule* module = engine_module(why_none);
  return module ? module->list_devices(why_none) : std::vector<Device>{};
}

std::unique_ptr<Backend> make_backend(const Device& device) {
  MIRROR_REQUIRE(kBuiltWithCuda, DeviceError, "cannot run on ", device.name(), ": ", kNoCuda);
  std::string why_not;
  const EngineModule* module = engine_module(why_not);
  MIRROR_REQUIRE(module != nullptr, DeviceError, "cannot run on ", device.name(), ": ", why_not);
  return module->make_backend(device);
}

std::string version_report() {
  if (!kBuiltWithCuda)
    return "Mirror build: host only (no CUDA backend)\n"
           "CUDA runtime, cuDNN, NCCL: not compiled in\n"
           "Fix: install the CUDA toolkit, put nvcc on PATH and rebuild with -Dcuda=enabled\n";
  std::string why_not;
  const EngineModule* module = engine_module(why_not);
  if (module) return module->version_report();
  return str("Mirror GPU support: built with CUDA, but its CUDA module could not be loaded, so Mirror runs on the CPU\n",
             "  diagnosis:\n    - ", why_not, "\n");
}

}  // namespace mirror::gpu
