// The GPU seam for builds without CUDA: no devices, and every entry point says how to get a
// CUDA build rather than failing obscurely.
#include "mirror/engine/error.hpp"
#include "mirror/engine/gpu_runtime.hpp"

namespace mirror::gpu {
namespace {

// MIRROR_CUDA_OPTION is the value of Meson's -Dcuda when this build was configured.
constexpr const char* kNoCuda =
    "this build of Mirror has no CUDA backend ("
#ifdef MIRROR_CUDA_OPTION
    "configured with -Dcuda=" MIRROR_CUDA_OPTION
#else
    "configured without CUDA"
#endif
    "; with -Dcuda=auto that means nvcc was not found): install the CUDA toolkit, put nvcc on PATH "
    "and rebuild with -Dcuda=enabled";

}  // namespace

bool built_with_cuda() { return false; }

std::vector<Device> list_devices(std::string& why_none) {
  why_none = kNoCuda;
  return {};
}

std::unique_ptr<Backend> make_backend(const Device& device) {
  throw DeviceError(str("cannot run on ", device.name(), ": ", kNoCuda));
}

std::string version_report() {
  return "Mirror build: host only (no CUDA backend)\n"
         "CUDA runtime, cuDNN, NCCL: not compiled in\n"
         "Fix: install the CUDA toolkit, put nvcc on PATH and rebuild with -Dcuda=enabled\n";
}

}  // namespace mirror::gpu
