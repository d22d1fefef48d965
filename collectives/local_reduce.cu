// Sum-into-all over the buffers of replicas sharing one GPU (see local_reduce.cuh).
#include "mirror/collectives/local_reduce.cuh"
#include "mirror/engine/cuda/cuda_check.hpp"
#include "mirror/engine/cuda/launch.cuh"

namespace mirror::cuda {
namespace {

__global__ void sum_into_all(LocalBuffers buffers, size_t begin, size_t end) {
  for (size_t i = begin + global_thread(); i < end; i += grid_stride()) {
    float sum = buffers.data[0][i];
    for (int k = 1; k < buffers.count; ++k) sum += buffers.data[k][i];
    for (int k = 0; k < buffers.count; ++k) buffers.data[k][i] = sum;
  }
}

}  // namespace

void launch_sum_into_all(const LocalBuffers& buffers, size_t begin, size_t end, cudaStream_t stream) {
  if (end <= begin) return;
  sum_into_all<<<grid_for(end - begin), kBlockSize, 0, stream>>>(buffers, begin, end);
  MIRROR_CUDA_LAUNCH_CHECK("sum_into_all");
}

}  // namespace mirror::cuda
