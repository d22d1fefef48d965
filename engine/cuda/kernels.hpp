// Launchers of Mirror's own CUDA kernels, callable from plain C++. Each queues its work on
// `stream` and checks the launch; shapes are in trailing comments, row-major, NHWC for images.
// Element-wise math comes from engine/elementwise.hpp, the same code the host backend runs.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "mirror/engine/backend.hpp"
#include "mirror/engine/geometry.hpp"

namespace mirror::cuda::kernels {

// ---- elementwise_kernels.cu ----
void fill(cudaStream_t stream, float* dst, size_t count, float value);
// y[r, c] = b[c]. y: (rows, cols), b: (cols)
void broadcast_bias(cudaStream_t stream, int64_t rows, int64_t cols, const float* b, float* y);
// y[r, c] = act(y[r, c] + b[c]) in place, for an element-wise act; b may be null (no bias).
void bias_activation(cudaStream_t stream, int64_t rows, int64_t cols, const float* b, Activation act, float* y);
// y = a + b; y may be a or b.
void add(cudaStream_t stream, size_t count, const float* a, const float* b, float* y);
// dst[r, 0:cols] = (or +=) src[r, 0:cols], rows src_stride / dst_stride floats apart.
void copy_columns(cudaStream_t stream, int64_t rows, int64_t cols, const float* src, int64_t src_stride, float* dst,
                  int64_t dst_stride, bool accumulate);
// y = act(x), row-wise for softmax (any activation but Linear). x, y: (rows, cols); y may be x.
void activation_forward(cudaStream_t stream, Activation act, int64_t rows, int64_t cols, const float* x, float* y);
// dx = dL/dx from dy (Backend::activation_backward's contract; x or y may be null where unused).
void activation_backward(cudaStream_t stream, Activation act, int64_t rows, int64_t cols, const float* x,
                         const float* y, const float* dy, float* dx);
// y = x * mask / (1 - rate), the mask from ew::dropout_keep; backward is the same call on dy, so
// the mask is drawn again, never stored. x, y: (rows, cols); y may be x.
void dropout_forward(cudaStream_t stream, const DropoutSpec& spec, int64_t rows, int64_t cols, const float* x,
                     float* y);

// ---- loss_kernels.cu ----
// stats[0] += sum of ew::loss_row over rows (a label failing ew::label_ok adds NaN and zeroes its
// dinput row); dinput: (rows, cols) or null. One block, fixed reduction order: the same inputs
// always give the same bits.
void loss(cudaStream_t stream, const LossSpec& spec, int64_t rows, int64_t cols, const float* outputs,
          const int32_t* labels, float scale, float* dinput, float* stats);
// stats[0] += sum of ew::metric_row over rows; one block, fixed reduction order.
void metric(cudaStream_t stream, const MetricSpec& spec, int64_t rows, int64_t cols, const float* outputs,
            const int32_t* labels, float* stats);

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

// ---- conv_padding.cu ----
// Zeros around NHWC images: (batch, h, w, channels) inside (batch, padded_h, padded_w, channels).
struct ImagePadding {
  int64_t batch = 0, h = 0, w = 0, channels = 0;
  int64_t top = 0, left = 0, bottom = 0, right = 0;
  constexpr int64_t padded_h() const { return h + top + bottom; }
  constexpr int64_t padded_w() const { return w + left + right; }
  constexpr size_t padded_count() const { return static_cast<size_t>(batch * padded_h() * padded_w() * channels); }
};
// xp = x with p's zeros around it (every element of xp written).
void pad_images(cudaStream_t stream, const ImagePadding& p, const float* x, float* xp);
// x = the inside of xp (the border dropped).
void crop_images(cudaStream_t stream, const ImagePadding& p, const float* xp, float* x);

// ---- pooling_kernels.cu ----
// Each padding of g must be smaller than its window (no window all padding).
// y: (batch, out_h, out_w, channels) = max over each window of x: (batch, in_h, in_w, channels)
void max_pool_forward(cudaStream_t stream, const PoolGeometry& g, const float* x, float* y);
// dx (overwritten): each dy at the first maximum of its window (row-major window order); with
// relu_input (x is a ReLU's output) times ReLU's derivative there, i.e. 0 where x <= 0.
void max_pool_backward(cudaStream_t stream, const PoolGeometry& g, const float* x, const float* dy, bool relu_input,
                       float* dx);
// y = the mean of each window's positions inside the input.
void avg_pool_forward(cudaStream_t stream, const PoolGeometry& g, const float* x, float* y);
// dx (overwritten): each dy shared equally among its window's positions inside the input.
void avg_pool_backward(cudaStream_t stream, const PoolGeometry& g, const float* dy, float* dx);
// y[n, c] = mean over p of x[n, p, c]. x: (batch, pixels, channels), y: (batch, channels)
void global_avg_pool_forward(cudaStream_t stream, int64_t batch, int64_t pixels, int64_t channels, const float* x,
                             float* y);
// dx[n, p, c] = dy[n, c] / pixels
void global_avg_pool_backward(cudaStream_t stream, int64_t batch, int64_t pixels, int64_t channels, const float* dy,
                              float* dx);

// ---- batch_norm_kernels.cu (Backend::batch_norm_*; x, y, dy, dx: (rows, channels)) ----
// Doubles of scratch the two sums need for `rows` x `channels` (per-chunk partial sums).
size_t batch_norm_partials_count(int64_t rows, int64_t channels);
// sums: (2 * channels), deterministic (fixed chunks and order, no atomics), zeros for no rows;
// partials: scratch of batch_norm_partials_count(rows, channels) doubles. shift may be null (zero).
void batch_norm_sums(cudaStream_t stream, int64_t rows, int64_t channels, const float* x, const float* shift,
                     double* partials, float* sums);
void batch_norm_backward_sums(cudaStream_t stream, int64_t rows, int64_t channels, const float* x, const float* dy,
                              const float* mean, const float* invstd, double* partials, float* sums);
// mean, var, invstd: (channels) from ew::batch_norm_moments.
void batch_norm_moments(cudaStream_t stream, int64_t channels, double count, float epsilon, const float* shift,
                        const float* sums, float* mean, float* var, float* invstd);
void batch_norm_invstd(cudaStream_t stream, int64_t channels, float epsilon, const float* var, float* invstd);
// gamma, beta may be null.
void batch_norm_forward(cudaStream_t stream, int64_t rows, int64_t channels, const float* x, const float* mean,
                        const float* invstd, const float* gamma, const float* beta, float* y);
void batch_norm_backward_data(cudaStream_t stream, int64_t rows, int64_t channels, const float* x, const float* dy,
                              const float* mean, const float* invstd, const float* gamma, const float* sums,
                              double count, float* dx);
// Does nothing when !ew::step_allowed(guard), read on the device.
void batch_norm_update_moving(cudaStream_t stream, int64_t channels, float momentum, const float* mean,
                              const float* var, const float* guard, float* moving_mean, float* moving_var);

// ---- optimizer_kernels.cu ----
// ew::accumulate_stats on one device thread (Backend::accumulate_stats); totals: (count + 1).
void accumulate_stats(cudaStream_t stream, size_t count, const float* step_stats, float* totals, int64_t step);
// Backend::optimizer_update: one launch over the flat buffers; does nothing when
// !ew::step_allowed(guard), read on the device.
void optimizer_update(cudaStream_t stream, size_t count, const OptimizerStep& step, const ParameterSegments& segments,
                      const float* guard, float* params, const float* grads, float* slots);
// Backend::clip_scales: one block per variable (or one block over the whole buffer with `global`),
// each summing in a fixed order, in double.
void clip_scales(cudaStream_t stream, const ParameterSegments& segments, const float* grads, float clip_norm,
                 bool global, float* scales);

}  // namespace mirror::cuda::kernels
