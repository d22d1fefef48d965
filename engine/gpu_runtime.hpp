// The seam between the engine and its optional CUDA part (engine/gpu_runtime.cpp): in a CUDA
// build each function goes through the CUDA module (engine/cuda_module.hpp), loaded at run time;
// without CUDA, they report that the build has none.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mirror/engine/backend.hpp"
#include "mirror/engine/device.hpp"

namespace mirror::gpu {

// True when this binary contains the CUDA backend.
bool built_with_cuda();

// The visible GPUs, or an empty list with the reason in `why_none`.
std::vector<Device> list_devices(std::string& why_none);

// A backend that runs ops on `device` (a GPU from list_devices). Throws DeviceError without CUDA.
std::unique_ptr<Backend> make_backend(const Device& device);

// A multi-line report: driver, CUDA runtime, cuDNN (run time and build time), NCCL versions,
// each GPU, and a diagnosis of any incompatibility with how to fix it.
std::string version_report();

}  // namespace mirror::gpu
