// Batch gathering from device-resident uint8 images, the small transpose that turns Keras's HWIO
// convolution kernels into cuDNN's KRSC and back, and the probe of this binary's kernel images.
#include "mirror/engine/cuda/cuda_check.hpp"
#include "mirror/engine/cuda/kernels.hpp"
#include "mirror/engine/cuda/launch.cuh"

namespace mirror::cuda::kernels {
namespace {

__global__ void transpose_kernel(size_t rows, size_t cols, const float* src, float* dst) {
  const size_t count = rows * cols;
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const size_t r = i / cols, c = i % cols;
    dst[c * rows + r] = src[i];
  }
}

__global__ void gather_kernel(const uint8_t* pixels, const int32_t* all_labels, size_t sample_size,
                              const int32_t* indices, size_t rows, float* x, int32_t* labels) {
  const size_t count = rows * sample_size;
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const size_t row = i / sample_size, j = i % sample_size;
    const size_t source = static_cast<size_t>(indices[row]);
    x[i] = static_cast<float>(pixels[source * sample_size + j]) / 255.0f;
    if (j == 0) labels[row] = all_labels[source];
  }
}

__global__ void probe_kernel() {}

}  // namespace

void transpose(cudaStream_t stream, int64_t rows, int64_t cols, const float* src, float* dst) {
  const size_t count = static_cast<size_t>(rows * cols);
  if (count == 0) return;
  transpose_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(static_cast<size_t>(rows), static_cast<size_t>(cols),
                                                              src, dst);
  MIRROR_CUDA_LAUNCH_CHECK("transpose_kernel");
}

void gather_batch(cudaStream_t stream, const uint8_t* pixels, const int32_t* all_labels, int64_t sample_size,
                  const int32_t* indices, int64_t rows, float* x, int32_t* labels) {
  const size_t count = static_cast<size_t>(rows * sample_size);
  if (count == 0) return;
  gather_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(pixels, all_labels, static_cast<size_t>(sample_size),
                                                           indices, static_cast<size_t>(rows), x, labels);
  MIRROR_CUDA_LAUNCH_CHECK("gather_kernel");
}

cudaError_t probe_kernel_image(int device, int* binary_version, int* ptx_version) {
  int previous = 0;
  cudaError_t status = cudaGetDevice(&previous);
  if (status != cudaSuccess) return status;
  status = cudaSetDevice(device);
  if (status != cudaSuccess) return status;
  cudaFuncAttributes attributes{};
  status = cudaFuncGetAttributes(&attributes, probe_kernel);
  cudaGetLastError();  // a missing image must not linger as the thread's last error
  if (status == cudaSuccess) {
    *binary_version = attributes.binaryVersion;
    *ptx_version = attributes.ptxVersion;
  }
  cudaSetDevice(previous);
  return status;
}

}  // namespace mirror::cuda::kernels
