// Fill, bias, activations and the fused softmax-cross-entropy-accuracy loss on the GPU. The math
// per element or row is engine/elementwise.hpp's, shared with the host backend.
#include "engine/cuda/cuda_check.hpp"
#include "engine/cuda/kernels.hpp"
#include "engine/cuda/launch.cuh"
#include "engine/elementwise.hpp"

namespace mirror::cuda::kernels {
namespace {

__global__ void fill_kernel(float* dst, size_t count, float value) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) dst[i] = value;
}

__global__ void broadcast_bias_kernel(size_t count, size_t cols, const float* b, float* y) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) y[i] = b[i % cols];
}

__global__ void add_bias_kernel(size_t count, size_t cols, const float* b, float* y) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) y[i] += b[i % cols];
}

__global__ void relu_forward_kernel(size_t count, float* y) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) y[i] = ew::relu(y[i]);
}

__global__ void relu_backward_kernel(size_t count, const float* y, float* dy) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) dy[i] = ew::relu_backward(y[i], dy[i]);
}

// One thread per row: the rows of a classifier are short (tens of classes).
__global__ void softmax_forward_kernel(size_t rows, int64_t cols, float* y) {
  for (size_t r = global_thread(); r < rows; r += grid_stride()) ew::softmax_row(y + r * cols, cols);
}

__global__ void softmax_backward_kernel(size_t rows, int64_t cols, const float* y, float* dy) {
  for (size_t r = global_thread(); r < rows; r += grid_stride())
    ew::softmax_backward_row(y + r * cols, dy + r * cols, cols);
}

// A single block walks all rows, then reduces in a fixed order, so the sums are reproducible and
// need no atomics; the host never waits for them.
__global__ void cross_entropy_kernel(int64_t rows, int64_t classes, const float* probs, const int32_t* labels,
                                     float scale, bool from_softmax_logits, float* dinput, float* stats) {
  __shared__ float loss_sums[kBlockSize];
  __shared__ float correct_sums[kBlockSize];
  float loss = 0.0f, correct = 0.0f;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const int32_t label = labels[r];
    float* d = dinput ? dinput + r * classes : nullptr;
    if (label < 0 || label >= classes) {
      // Labels are checked when a data set is loaded; a bad one here poisons the loss, so the
      // optimizer skips the step and the trainer reports a non-finite loss.
      loss += __int_as_float(0x7fc00000);
      if (d)
        for (int64_t j = 0; j < classes; ++j) d[j] = 0.0f;
      continue;
    }
    ew::cross_entropy_row(probs + r * classes, label, classes, scale, from_softmax_logits, d, loss, correct);
  }
  loss_sums[threadIdx.x] = loss;
  correct_sums[threadIdx.x] = correct;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      loss_sums[threadIdx.x] += loss_sums[threadIdx.x + half];
      correct_sums[threadIdx.x] += correct_sums[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[0] += loss_sums[0];
    stats[1] += correct_sums[0];
  }
}

}  // namespace

void fill(cudaStream_t stream, float* dst, size_t count, float value) {
  if (count == 0) return;
  fill_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(dst, count, value);
  MIRROR_CUDA_LAUNCH_CHECK("fill_kernel");
}

void broadcast_bias(cudaStream_t stream, int64_t rows, int64_t cols, const float* b, float* y) {
  const size_t count = static_cast<size_t>(rows * cols);
  if (count == 0) return;
  broadcast_bias_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(count, static_cast<size_t>(cols), b, y);
  MIRROR_CUDA_LAUNCH_CHECK("broadcast_bias_kernel");
}

void add_bias(cudaStream_t stream, int64_t rows, int64_t cols, const float* b, float* y) {
  const size_t count = static_cast<size_t>(rows * cols);
  if (count == 0) return;
  add_bias_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(count, static_cast<size_t>(cols), b, y);
  MIRROR_CUDA_LAUNCH_CHECK("add_bias_kernel");
}

void relu_forward(cudaStream_t stream, size_t count, float* y) {
  if (count == 0) return;
  relu_forward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(count, y);
  MIRROR_CUDA_LAUNCH_CHECK("relu_forward_kernel");
}

void relu_backward(cudaStream_t stream, size_t count, const float* y, float* dy) {
  if (count == 0) return;
  relu_backward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(count, y, dy);
  MIRROR_CUDA_LAUNCH_CHECK("relu_backward_kernel");
}

void softmax_forward(cudaStream_t stream, int64_t rows, int64_t cols, float* y) {
  if (rows == 0 || cols == 0) return;
  const size_t n = static_cast<size_t>(rows);
  softmax_forward_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(n, cols, y);
  MIRROR_CUDA_LAUNCH_CHECK("softmax_forward_kernel");
}

void softmax_backward(cudaStream_t stream, int64_t rows, int64_t cols, const float* y, float* dy) {
  if (rows == 0 || cols == 0) return;
  const size_t n = static_cast<size_t>(rows);
  softmax_backward_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(n, cols, y, dy);
  MIRROR_CUDA_LAUNCH_CHECK("softmax_backward_kernel");
}

void sparse_categorical_crossentropy(cudaStream_t stream, int64_t rows, int64_t classes, const float* probs,
                                     const int32_t* labels, float scale, bool from_softmax_logits, float* dinput,
                                     float* stats) {
  if (rows == 0) return;
  cross_entropy_kernel<<<1, kBlockSize, 0, stream>>>(rows, classes, probs, labels, scale, from_softmax_logits,
                                                    dinput, stats);
  MIRROR_CUDA_LAUNCH_CHECK("cross_entropy_kernel");
}

}  // namespace mirror::cuda::kernels
