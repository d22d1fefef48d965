// Status checks for the CUDA runtime, cuDNN and cuBLAS: each macro records the expression, its
// file:line and the library's own error text, and throws DeviceError. (NCCL's is in nccl_check.hpp.)
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "engine/error.hpp"

namespace mirror::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line) {
  throw DeviceError(str("CUDA error ", cudaGetErrorName(status), " (", cudaGetErrorString(status), ") in ", expr,
                        " at ", file, ":", line));
}

[[noreturn]] inline void throw_cudnn_error(cudnnStatus_t status, const char* expr, const char* file, int line) {
  throw DeviceError(str("cuDNN error ", cudnnGetErrorString(status), " (", static_cast<int>(status), ") in ", expr,
                        " at ", file, ":", line));
}

inline const char* cublas_status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED (is a GPU visible?)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED (out of GPU memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "unknown cuBLAS status";
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
  throw DeviceError(str("cuBLAS error ", cublas_status_name(status), " (", static_cast<int>(status), ") in ", expr,
                        " at ", file, ":", line));
}

}  // namespace mirror::cuda

#define MIRROR_CUDA_CHECK(expr)                                                                 \
  do {                                                                                          \
    const cudaError_t mirror_status_ = (expr);                                                  \
    if (mirror_status_ != cudaSuccess) ::mirror::cuda::throw_cuda_error(mirror_status_, #expr, __FILE__, __LINE__); \
  } while (0)

#define MIRROR_CUDNN_CHECK(expr)                                                                  \
  do {                                                                                            \
    const cudnnStatus_t mirror_status_ = (expr);                                                  \
    if (mirror_status_ != CUDNN_STATUS_SUCCESS)                                                   \
      ::mirror::cuda::throw_cudnn_error(mirror_status_, #expr, __FILE__, __LINE__);               \
  } while (0)

#define MIRROR_CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                            \
    const cublasStatus_t mirror_status_ = (expr);                                                 \
    if (mirror_status_ != CUBLAS_STATUS_SUCCESS)                                                  \
      ::mirror::cuda::throw_cublas_error(mirror_status_, #expr, __FILE__, __LINE__);              \
  } while (0)

// After every kernel launch: a bad launch configuration or a missing kernel image for this GPU
// ("no kernel image is available", see version_report()) surfaces here, naming the kernel.
#define MIRROR_CUDA_LAUNCH_CHECK(kernel_name)                                                     \
  do {                                                                                            \
    const cudaError_t mirror_status_ = cudaGetLastError();                                        \
    if (mirror_status_ != cudaSuccess)                                                            \
      ::mirror::cuda::throw_cuda_error(mirror_status_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)
