// Launchers of Mirror's own CUDA kernels, callable from plain C++. Each queues its work on
// `stream` and checks the launch; shapes are in trailing comments, row-major, NHWC for images.
// Element-wise math comes from engine/elementwise.hpp, the same code the host backend runs.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "engine/backend.hpp"
#include "engine/geometry.hpp"

namespace mirror::cuda::kernels {

// ---- elementwise_kernels.cu ----
void fill(cudaStream_t stream, float* dst, size_t count, float value);
// y[r, c] = b[c]. y: (rows, cols), b: (cols)
void broadcast_bias(cudaStream_t stream, int64_t rows, int64_t cols, const float* b, float* y);
// y[r, c] += b[c]
void add_bias(cudaStream_t stream, int64_t rows, int64_t cols, const float* b, float* y);
void relu_forward(cudaStream_t stream, size_t count, float* y);
void relu_backward(cudaStream_t stream, size_t count, const float* y, float* dy);
// Row-wise softmax in place and its backward (dy := J^T dy). y, dy: (rows, cols)
void softmax_forward(cudaStream_t stream, int64_t rows, int64_t cols, float* y);
void softmax_backward(cudaStream_t stream, int64_t rows, int64_t cols, const float* y, float* dy);
// Fused cross-entropy + accuracy over rows of `classes`, summed on the device into stats
// (one block, fixed reduction order: the same inputs always give the same bits).
void sparse_categorical_crossentropy(cudaStream_t stream, int64_t rows, int64_t classes, const float* probs,
                                     const int32_t* labels, float scale, bool from_softmax_logits, float* dinput,
                                     float* stats);

// ---- input_kernels.cu ----
// dst[c, r] = src[r, c]. src: (rows, cols), dst: (cols, rows)
void transpose(cudaStream_t stream, int64_t rows, int64_t cols, const float* src, float* dst);
// x[i, :] = pixels[indices[i], :] / 255, labels[i] = all_labels[indices[i]].
// pixels: (count, sample_size) uint8, x: (rows, sample_size)
void gather_batch(cudaStream_t stream, const uint8_t* pixels, const int32_t* all_labels, int64_t sample_size,
                  const int32_t* indices, int64_t rows, float* x, int32_t* labels);
// Whether this binary holds a kernel image `device` can run: the loaded image's architecture
// (binary_version, e.g. 90) and its PTX version, or cudaErrorNoKernelImageForDevice.
cudaError_t probe_kernel_image(int device, int* binary_version, int* ptx_version);

// ---- pooling_kernels.cu ----
// y: (batch, out_h, out_w, channels) = max over each window of x: (batch, in_h, in_w, channels)
void max_pool_forward(cudaStream_t stream, const PoolGeometry& g, const float* x, float* y);
// dx (overwritten): each dy at the first maximum of its window (row-major window order).
void max_pool_backward(cudaStream_t stream, const PoolGeometry& g, const float* x, const float* dy, float* dx);

// ---- optimizer_kernels.cu ----
// ew::accumulate_stats on one device thread (Backend::accumulate_stats).
void accumulate_stats(cudaStream_t stream, const float* step_stats, float* totals, int64_t step);
// One launch over the flat buffers; does nothing when !ew::step_allowed(stats), read on the device.
void adam_update(cudaStream_t stream, size_t count, const AdamStep& step, const float* stats, float* params,
                 const float* grads, float* m, float* v);
// momentum may be null (plain SGD).
void sgd_update(cudaStream_t stream, size_t count, const SgdStep& step, const float* stats, float* params,
                const float* grads, float* momentum);

}  // namespace mirror::cuda::kernels
