// The CUDA module. A CUDA build of Mirror puts the CUDA backend and the NCCL communicators in a
// library of their own, libmirror_cuda (linked against cudart, cuBLAS, cuDNN and NCCL), beside
// libmirror, which needs none of them. The core loads the module with dlopen the first time a GPU
// is looked for on a machine with an NVIDIA driver, or asked for; so a program built with CUDA
// starts and trains on the CPU where those libraries are missing, loads none of them on a machine
// without a driver, and says which library is missing (and how to get it) when the module cannot
// be loaded. The module hands the core a table of functions per layer (this one for the engine,
// collectives/gpu_module.hpp's for the communicators), each stamped with the build it came from.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mirror/engine/backend.hpp"
#include "mirror/engine/device.hpp"

namespace mirror::gpu {

// What the module gives the engine (engine/cuda/cuda_devices.cpp).
struct EngineModule {
  const char* build_id;  // the module's MIRROR_BUILD_ID: must equal the core's
  std::vector<Device> (*list_devices)(std::string& why_none);
  std::unique_ptr<Backend> (*make_backend)(const Device& device);
  std::string (*version_report)();
};

// Each table is returned by an extern "C" function of the module with this name, taking nothing.
inline constexpr const char* kEngineModuleEntry = "mirror_cuda_engine_module";
inline constexpr const char* kCollectivesModuleEntry = "mirror_cuda_collectives_module";

// Mirror's version and the compiler that built it, as each side was compiled: a module from
// another build is refused. (A macro, not a function: a function would be the core's in both.)
#define MIRROR_BUILD_ID "Mirror " MIRROR_VERSION ", " __VERSION__

// The module's function `entry` (see above), called once; loads the module on first use (once per
// process, whichever thread asks). Null, with the reason in `why_not`, when this build has no
// module or it cannot be loaded.
const void* module_table(const char* entry, std::string& why_not);

// True when the module is loaded in this process (for reports; never loads it).
bool module_loaded();

// Whether this machine has an NVIDIA driver: /proc/driver/nvidia/version, /dev/nvidiactl or WSL's
// /dev/dxg exists. Without one no GPU can be found, so discovery does not load the module.
bool nvidia_driver_present();

// Folders the dynamic loader searches, as far as a program can tell: LD_LIBRARY_PATH, the CUDA
// toolkit's, /etc/ld.so.conf's, and the system's.
std::vector<std::string> library_search_dirs();

// A sentence on why the module at `module_path` failed to load, from dlerror()'s `dl_error`: which
// library is missing, what this build needs (`cuda_version` is the toolkit Mirror was built with,
// e.g. "13.0"), other versions of it found in `search_dirs`, and the fix.
std::string explain_load_failure(std::string_view module_path, std::string_view dl_error,
                                 std::string_view cuda_version, const std::vector<std::string>& search_dirs);

}  // namespace mirror::gpu
