// The kernel behind GroupedGpuCommunicator's reduction among replicas that share one GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace mirror::cuda {

inline constexpr int kMaxLocalReplicas = 16;

// Device pointers of the replicas on one GPU, passed to the kernel by value.
struct LocalBuffers {
  float* data[kMaxLocalReplicas];
  int count;
};

// For i in [begin, end): s = sum over k (in k order) of data[k][i]; then data[k][i] = s for all k.
// Queued on `stream`; the caller orders it after the writes of every buffer.
void launch_sum_into_all(const LocalBuffers& buffers, size_t begin, size_t end, cudaStream_t stream);

}  // namespace mirror::cuda
