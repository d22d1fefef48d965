// Losses and metrics on the GPU, summed on the device into a stats slot so the host never waits
// for them. The per-sample math is engine/elementwise.hpp's (ew::loss_row, ew::metric_row), the
// host backend's too. A single block walks all rows, then reduces in a fixed order, so the sums
// are reproducible and need no atomics; batches are small next to the layers before the loss.
#include "mirror/engine/cuda/cuda_check.hpp"
#include "mirror/engine/cuda/kernels.hpp"
#include "mirror/engine/cuda/launch.cuh"
#include "mirror/engine/elementwise.hpp"

namespace mirror::cuda::kernels {
namespace {

// stats[0] += the sum over rows of per_row(r), each thread summing rows threadIdx.x, + blockDim.x,
// ..., then a fixed tree over the threads. Launched with one block of kBlockSize threads.
template <typename PerRow>
__device__ void add_row_sum(int64_t rows, const PerRow& per_row, float* stats) {
  __shared__ float sums[kBlockSize];
  float sum = 0.0f;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) sum += per_row(r);
  sums[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) sums[threadIdx.x] += sums[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) stats[0] += sums[0];
}

// outputs, dinput: (rows, cols); labels: (rows)
__global__ void loss_kernel(LossSpec spec, int64_t rows, int64_t cols, const float* outputs, const int32_t* labels,
                            float scale, float* dinput, float* stats) {
  const auto per_row = [&](int64_t r) {
    const int32_t label = labels[r];
    float* d = dinput ? dinput + r * cols : nullptr;
    if (!ew::label_ok(spec, label, cols)) {
      // Labels are checked when a data set is loaded; a bad one here poisons the loss, so the
      // optimizer skips the step and the trainer reports a non-finite loss.
      if (d)
        for (int64_t j = 0; j < cols; ++j) d[j] = 0.0f;
      return __int_as_float(0x7fc00000);
    }
    return ew::loss_row(spec, outputs + r * cols, label, cols, scale, d);
  };
  add_row_sum(rows, per_row, stats);
}

// A label the metric cannot match counts as wrong (ew::metric_row).
__global__ void metric_kernel(MetricSpec spec, int64_t rows, int64_t cols, const float* outputs,
                              const int32_t* labels, float* stats) {
  const auto per_row = [&](int64_t r) { return ew::metric_row(spec, outputs + r * cols, labels[r], cols); };
  add_row_sum(rows, per_row, stats);
}

}  // namespace

void loss(cudaStream_t stream, const LossSpec& spec, int64_t rows, int64_t cols, const float* outputs,
          const int32_t* labels, float scale, float* dinput, float* stats) {
  if (rows <= 0) return;
  loss_kernel<<<1, kBlockSize, 0, stream>>>(spec, rows, cols, outputs, labels, scale, dinput, stats);
  MIRROR_CUDA_LAUNCH_CHECK("loss_kernel");
}

void metric(cudaStream_t stream, const MetricSpec& spec, int64_t rows, int64_t cols, const float* outputs,
            const int32_t* labels, float* stats) {
  if (rows <= 0) return;
  metric_kernel<<<1, kBlockSize, 0, stream>>>(spec, rows, cols, outputs, labels, stats);
  MIRROR_CUDA_LAUNCH_CHECK("metric_kernel");
}

}  // namespace mirror::cuda::kernels
