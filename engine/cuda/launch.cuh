// Launch-shape helpers shared by Mirror's .cu files: grid-stride loops over flat index ranges.
#pragma once

#include <algorithm>
#include <cstddef>

namespace mirror::cuda {

inline constexpr int kBlockSize = 256;
// Enough blocks to fill any current GPU several times over; kernels loop over the rest.
inline constexpr size_t kMaxBlocks = size_t{1} << 16;

inline unsigned grid_for(size_t count) {
  return static_cast<unsigned>(std::min((count + kBlockSize - 1) / kBlockSize, kMaxBlocks));
}

__device__ inline size_t global_thread() { return blockIdx.x * size_t{blockDim.x} + threadIdx.x; }
__device__ inline size_t grid_stride() { return size_t{gridDim.x} * blockDim.x; }

}  // namespace mirror::cuda
