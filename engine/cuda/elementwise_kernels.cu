// Fill, bias, add, column copies, activations and dropout on the GPU. The math per element or row
// is engine/elementwise.hpp's, shared with the host backend.
#include "mirror/engine/cuda/cuda_check.hpp"
#include "mirror/engine/cuda/kernels.hpp"
#include "mirror/engine/cuda/launch.cuh"
#include "mirror/engine/elementwise.hpp"

namespace mirror::cuda::kernels {
namespace {

__global__ void fill_kernel(float* dst, size_t count, float value) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) dst[i] = value;
}

__global__ void broadcast_bias_kernel(size_t count, size_t cols, const float* b, float* y) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) y[i] = b[i % cols];
}

// y = act(y + b) in one pass: a convolution's bias and activation. b may be null.
__global__ void bias_activation_kernel(Activation act, size_t count, size_t cols, const float* b, float* y) {
  for (size_t i = global_thread(); i < count; i += grid_stride())
    y[i] = ew::activation(act, b ? y[i] + b[i % cols] : y[i]);
}

__global__ void add_kernel(size_t count, const float* a, const float* b, float* y) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) y[i] = a[i] + b[i];
}

// One thread per copied element. src: (rows, >= cols) rows src_stride apart; dst likewise.
__global__ void copy_columns_kernel(size_t count, int64_t cols, const float* src, int64_t src_stride, float* dst,
                                    int64_t dst_stride, bool accumulate) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const int64_t r = static_cast<int64_t>(i) / cols, c = static_cast<int64_t>(i) % cols;
    const float v = src[r * src_stride + c];
    float& out = dst[r * dst_stride + c];
    out = accumulate ? out + v : v;
  }
}

__global__ void activation_forward_kernel(Activation act, size_t count, const float* x, float* y) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) y[i] = ew::activation(act, x[i]);
}

// x or y is null where the activation's gradient does not read it (backward_needs_input).
__global__ void activation_backward_kernel(Activation act, size_t count, const float* x, const float* y,
                                           const float* dy, float* dx) {
  for (size_t i = global_thread(); i < count; i += grid_stride())
    dx[i] = ew::activation_grad(act, x ? x[i] : 0.0f, y ? y[i] : 0.0f, dy[i]);
}

// One thread per row: the rows of a classifier are short (tens of classes).
__global__ void softmax_forward_kernel(size_t rows, int64_t cols, const float* x, float* y) {
  for (size_t r = global_thread(); r < rows; r += grid_stride()) {
    float* y_row = y + r * cols;
    if (x != y)
      for (int64_t j = 0; j < cols; ++j) y_row[j] = x[r * cols + j];
    ew::softmax_row(y_row, cols);
  }
}

__global__ void softmax_backward_kernel(size_t rows, int64_t cols, const float* y, const float* dy, float* dx) {
  for (size_t r = global_thread(); r < rows; r += grid_stride()) {
    float* dx_row = dx + r * cols;
    if (dx != dy)
      for (int64_t j = 0; j < cols; ++j) dx_row[j] = dy[r * cols + j];
    ew::softmax_backward_row(y + r * cols, dx_row, cols);
  }
}

// Element i of the share is element first_row * cols + i of the batch, whose counter decides
// whether it is kept. in, out: (rows, cols); out may be in.
__global__ void dropout_kernel(DropoutSpec spec, size_t count, int64_t first_index, const float* in, float* out) {
  const float scale = ew::dropout_scale(spec);
  for (size_t i = global_thread(); i < count; i += grid_stride())
    out[i] = ew::dropout_keep(spec, first_index + static_cast<int64_t>(i)) ? in[i] * scale : 0.0f;
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

void bias_activation(cudaStream_t stream, int64_t rows, int64_t cols, const float* b, Activation act, float* y) {
  const size_t count = static_cast<size_t>(rows * cols);
  if (count == 0 || (!b && act == Activation::Linear)) return;
  bias_activation_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(act, count, static_cast<size_t>(cols), b, y);
  MIRROR_CUDA_LAUNCH_CHECK("bias_activation_kernel");
}

void add(cudaStream_t stream, size_t count, const float* a, const float* b, float* y) {
  if (count == 0) return;
  add_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(count, a, b, y);
  MIRROR_CUDA_LAUNCH_CHECK("add_kernel");
}

void copy_columns(cudaStream_t stream, int64_t rows, int64_t cols, const float* src, int64_t src_stride, float* dst,
                  int64_t dst_stride, bool accumulate) {
  if (rows <= 0 || cols <= 0) return;
  const size_t count = static_cast<size_t>(rows * cols);
  copy_columns_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(count, cols, src, src_stride, dst, dst_stride,
                                                                  accumulate);
  MIRROR_CUDA_LAUNCH_CHECK("copy_columns_kernel");
}

void activation_forward(cudaStream_t stream, Activation act, int64_t rows, int64_t cols, const float* x, float* y) {
  if (rows <= 0 || cols <= 0) return;
  if (is_row_wise(act)) {
    const size_t n = static_cast<size_t>(rows);
    softmax_forward_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(n, cols, x, y);
    MIRROR_CUDA_LAUNCH_CHECK("softmax_forward_kernel");
    return;
  }
  const size_t count = static_cast<size_t>(rows * cols);
  activation_forward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(act, count, x, y);
  MIRROR_CUDA_LAUNCH_CHECK("activation_forward_kernel");
}

void activation_backward(cudaStream_t stream, Activation act, int64_t rows, int64_t cols, const float* x,
                         const float* y, const float* dy, float* dx) {
  if (rows <= 0 || cols <= 0) return;
  if (is_row_wise(act)) {
    const size_t n = static_cast<size_t>(rows);
    softmax_backward_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(n, cols, y, dy, dx);
    MIRROR_CUDA_LAUNCH_CHECK("softmax_backward_kernel");
    return;
  }
  const size_t count = static_cast<size_t>(rows * cols);
  activation_backward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(act, count, x, y, dy, dx);
  MIRROR_CUDA_LAUNCH_CHECK("activation_backward_kernel");
}

void dropout_forward(cudaStream_t stream, const DropoutSpec& spec, int64_t rows, int64_t cols, const float* x,
                     float* y) {
  if (rows <= 0 || cols <= 0) return;
  const size_t count = static_cast<size_t>(rows * cols);
  dropout_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(spec, count, spec.first_row * cols, x, y);
  MIRROR_CUDA_LAUNCH_CHECK("dropout_kernel");
}

}  // namespace mirror::cuda::kernels
