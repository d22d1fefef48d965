// Status checks for cuDNN and cuBLAS: each macro records the expression, its file:line and the
// library's own error text, and throws DeviceError.
#pragma once

#include <cublas_v2.h>
#include <cudnn.h>

#include "mirror/engine/cuda/cuda_check.hpp"

namespace mirror::cuda {

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
