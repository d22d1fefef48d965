// Status checks for the CUDA runtime: the macro records the expression, its file:line and CUDA's
// own error text, and throws DeviceError; plus the check after every kernel launch. cuDNN's and
// cuBLAS's are in library_check.hpp, NCCL's in nccl_check.hpp (so .cu files need only CUDA's headers).
#pragma once

#include <cuda_runtime.h>

#include "mirror/engine/error.hpp"

namespace mirror::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line) {
  throw DeviceError(str("CUDA error ", cudaGetErrorName(status), " (", cudaGetErrorString(status), ") in ", expr,
                        " at ", file, ":", line));
}

}  // namespace mirror::cuda

#define MIRROR_CUDA_CHECK(expr)                                                                 \
  do {                                                                                          \
    const cudaError_t mirror_status_ = (expr);                                                  \
    if (mirror_status_ != cudaSuccess) ::mirror::cuda::throw_cuda_error(mirror_status_, #expr, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: a bad launch configuration or a missing kernel image for this GPU
// ("no kernel image is available", see version_report()) surfaces here, naming the kernel.
#define MIRROR_CUDA_LAUNCH_CHECK(kernel_name)                                                     \
  do {                                                                                            \
    const cudaError_t mirror_status_ = cudaGetLastError();                                        \
    if (mirror_status_ != cudaSuccess)                                                            \
      ::mirror::cuda::throw_cuda_error(mirror_status_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)
