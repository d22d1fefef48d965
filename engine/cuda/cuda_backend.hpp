// The CUDA backend's public face: creating one, and reaching its stream from code that joins its
// work (the NCCL communicator). Everything else about it is private to engine/cuda.
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "mirror/engine/backend.hpp"
#include "mirror/engine/cuda/memory_pool.hpp"

namespace mirror::cuda {

// A backend on GPU `device.index`, with its own non-blocking stream, cuDNN and cuBLAS handles.
// Throws DeviceError when the GPU cannot be used.
std::unique_ptr<Backend> make_cuda_backend(const Device& device);

// The stream every op of `backend` is queued on. Work queued on it by other libraries is ordered
// with the backend's ops in both directions. Throws InvalidArgument when `backend` is not a CUDA
// backend.
cudaStream_t stream_of(const Backend& backend);

// Whether float32 convolutions and matrix products may use TF32 tensor cores: off (exact float32)
// unless the environment sets MIRROR_ALLOW_TF32=1. Read on every call; a backend reads it once,
// when it is constructed, and keeps that choice.
bool tf32_allowed();

// Allocation counters of GPU `device`'s memory pool (see memory_pool.hpp).
inline PoolStats memory_stats(int device) { return DeviceMemoryPool::for_device(device).stats(); }

}  // namespace mirror::cuda
