// Pooling, NHWC: max and average over windows with explicit padding, and global average pooling.
// Padded positions never win a max and are not counted in an average (Keras's "same" pooling);
// CudaBackend checks that each padding is smaller than its window, so no window is all padding.
// Max backward gives each dy to the FIRST maximum of its window (row-major window order), as
// engine/backend.hpp requires; it recomputes that position from x rather than storing indices.
// Both backward passes run one thread per input element, summing the windows that cover it in a
// fixed order, so overlapping windows need no atomics and every dx element is written.
#include "mirror/engine/cuda/cuda_check.hpp"
#include "mirror/engine/cuda/kernels.hpp"
#include "mirror/engine/cuda/launch.cuh"
#include "mirror/engine/elementwise.hpp"

namespace mirror::cuda::kernels {
namespace {

struct PoolShape {
  int64_t batch, in_h, in_w, channels, pool_h, pool_w, stride_h, stride_w, pad_top, pad_left, out_h, out_w;
};

PoolShape shape_of(const PoolGeometry& g) {
  return {g.batch,    g.in_h,    g.in_w,       g.channels,    g.pool_h,  g.pool_w,
          g.stride_h, g.stride_w, g.pad_top, g.pad_left, g.out_h(), g.out_w()};
}

// The input rows [h_begin, h_end) and columns [w_begin, w_end) that window (oh, ow) covers.
struct Window {
  int64_t h_begin, h_end, w_begin, w_end;
  __device__ int64_t count() const { return (h_end - h_begin) * (w_end - w_begin); }
};

__device__ inline Window window_of(const PoolShape& s, int64_t oh, int64_t ow) {
  const int64_t h0 = oh * s.stride_h - s.pad_top, w0 = ow * s.stride_w - s.pad_left;
  return {max(h0, int64_t{0}), min(h0 + s.pool_h, s.in_h), max(w0, int64_t{0}), min(w0 + s.pool_w, s.in_w)};
}

// The windows along one dimension that cover input position `i`: [lo, hi] (empty when lo > hi).
// Window o covers [o * stride - pad, o * stride - pad + pool).
__device__ inline void covering(int64_t i, int64_t pad, int64_t pool, int64_t stride, int64_t out, int64_t& lo,
                                int64_t& hi) {
  const int64_t first = i + pad - pool + 1;  // o * stride >= first
  lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  hi = min(out - 1, (i + pad) / stride);
}

// Splits a flat NHWC index into (n, h, w, c) for an image of height h_size and width w_size.
struct Pixel {
  int64_t n, h, w, c;
};
__device__ inline Pixel pixel_of(size_t i, int64_t h_size, int64_t w_size, int64_t channels) {
  Pixel p;
  p.c = static_cast<int64_t>(i % channels);
  int64_t rest = static_cast<int64_t>(i / channels);
  p.w = rest % w_size;
  rest /= w_size;
  p.h = rest % h_size;
  p.n = rest / h_size;
  return p;
}

// Offset in x (within image n, channel c) of the first maximum of a window, or of its first NaN
// (ew::becomes_max), so max pooling propagates NaN as on the host.
__device__ inline int64_t first_max_offset(const PoolShape& s, const float* x_nc, const Window& win) {
  int64_t best = (win.h_begin * s.in_w + win.w_begin) * s.channels;
  float best_value = x_nc[best];
  for (int64_t h = win.h_begin; h < win.h_end; ++h) {
    for (int64_t w = win.w_begin; w < win.w_end; ++w) {
      const int64_t offset = (h * s.in_w + w) * s.channels;
      if (ew::becomes_max(x_nc[offset], best_value)) {
        best_value = x_nc[offset];
        best = offset;
      }
    }
  }
  return best;
}

// One thread per output element. y: (batch, out_h, out_w, channels)
__global__ void max_pool_forward_kernel(PoolShape s, const float* x, float* y) {
  const size_t count = static_cast<size_t>(s.batch * s.out_h * s.out_w * s.channels);
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const Pixel o = pixel_of(i, s.out_h, s.out_w, s.channels);
    const float* x_nc = x + o.n * s.in_h * s.in_w * s.channels + o.c;
    y[i] = x_nc[first_max_offset(s, x_nc, window_of(s, o.h, o.w))];
  }
}

// One thread per input element. dx: (batch, in_h, in_w, channels). With relu_input, x is a ReLU's
// output and dx also takes ReLU's derivative: 0 where x <= 0 (no window search needed there).
__global__ void max_pool_backward_kernel(PoolShape s, const float* x, const float* dy, bool relu_input, float* dx) {
  const size_t count = static_cast<size_t>(s.batch * s.in_h * s.in_w * s.channels);
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    if (relu_input && !(x[i] > 0.0f)) {
      dx[i] = 0.0f;
      continue;
    }
    const Pixel p = pixel_of(i, s.in_h, s.in_w, s.channels);
    const float* x_nc = x + p.n * s.in_h * s.in_w * s.channels + p.c;
    const int64_t self = (p.h * s.in_w + p.w) * s.channels;
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    covering(p.h, s.pad_top, s.pool_h, s.stride_h, s.out_h, oh_lo, oh_hi);
    covering(p.w, s.pad_left, s.pool_w, s.stride_w, s.out_w, ow_lo, ow_hi);
    float sum = 0.0f;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh) {
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        if (first_max_offset(s, x_nc, window_of(s, oh, ow)) == self)
          sum += dy[((p.n * s.out_h + oh) * s.out_w + ow) * s.channels + p.c];
      }
    }
    dx[i] = sum;
  }
}

// One thread per output element: the mean of the window's positions inside the input.
__global__ void avg_pool_forward_kernel(PoolShape s, const float* x, float* y) {
  const size_t count = static_cast<size_t>(s.batch * s.out_h * s.out_w * s.channels);
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const Pixel o = pixel_of(i, s.out_h, s.out_w, s.channels);
    const float* x_nc = x + o.n * s.in_h * s.in_w * s.channels + o.c;
    const Window win = window_of(s, o.h, o.w);
    float sum = 0.0f;
    for (int64_t h = win.h_begin; h < win.h_end; ++h)
      for (int64_t w = win.w_begin; w < win.w_end; ++w) sum += x_nc[(h * s.in_w + w) * s.channels];
    y[i] = sum / static_cast<float>(win.count());
  }
}

// One thread per input element: the share of each covering window's dy.
__global__ void avg_pool_backward_kernel(PoolShape s, const float* dy, float* dx) {
  const size_t count = static_cast<size_t>(s.batch * s.in_h * s.in_w * s.channels);
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const Pixel p = pixel_of(i, s.in_h, s.in_w, s.channels);
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    covering(p.h, s.pad_top, s.pool_h, s.stride_h, s.out_h, oh_lo, oh_hi);
    covering(p.w, s.pad_left, s.pool_w, s.stride_w, s.out_w, ow_lo, ow_hi);
    float sum = 0.0f;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh) {
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        const float share = dy[((p.n * s.out_h + oh) * s.out_w + ow) * s.channels + p.c];
        sum += share / static_cast<float>(window_of(s, oh, ow).count());
      }
    }
    dx[i] = sum;
  }
}

// One thread per (image, channel); adjacent threads read adjacent channels. y: (batch, channels)
__global__ void global_avg_pool_forward_kernel(int64_t batch, int64_t pixels, int64_t channels, const float* x,
                                               float* y) {
  const size_t count = static_cast<size_t>(batch * channels);
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const int64_t n = static_cast<int64_t>(i) / channels, c = static_cast<int64_t>(i) % channels;
    const float* x_nc = x + n * pixels * channels + c;
    float sum = 0.0f;
    for (int64_t p = 0; p < pixels; ++p) sum += x_nc[p * channels];
    y[i] = sum / static_cast<float>(pixels);
  }
}

// dx: (batch, pixels, channels)
__global__ void global_avg_pool_backward_kernel(int64_t batch, int64_t pixels, int64_t channels, const float* dy,
                                                float* dx) {
  const size_t count = static_cast<size_t>(batch * pixels * channels);
  const float inv_pixels = 1.0f / static_cast<float>(pixels);
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const int64_t c = static_cast<int64_t>(i % channels), n = static_cast<int64_t>(i / channels) / pixels;
    dx[i] = dy[n * channels + c] * inv_pixels;
  }
}

size_t output_count(const PoolShape& s) { return static_cast<size_t>(s.batch * s.out_h * s.out_w * s.channels); }
size_t input_count(const PoolShape& s) { return static_cast<size_t>(s.batch * s.in_h * s.in_w * s.channels); }

}  // namespace

void max_pool_forward(cudaStream_t stream, const PoolGeometry& g, const float* x, float* y) {
  const PoolShape s = shape_of(g);
  const size_t count = output_count(s);
  if (count == 0) return;
  max_pool_forward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(s, x, y);
  MIRROR_CUDA_LAUNCH_CHECK("max_pool_forward_kernel");
}

void max_pool_backward(cudaStream_t stream, const PoolGeometry& g, const float* x, const float* dy, bool relu_input,
                       float* dx) {
  const PoolShape s = shape_of(g);
  const size_t count = input_count(s);
  if (count == 0) return;
  max_pool_backward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(s, x, dy, relu_input, dx);
  MIRROR_CUDA_LAUNCH_CHECK("max_pool_backward_kernel");
}

void avg_pool_forward(cudaStream_t stream, const PoolGeometry& g, const float* x, float* y) {
  const PoolShape s = shape_of(g);
  const size_t count = output_count(s);
  if (count == 0) return;
  avg_pool_forward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(s, x, y);
  MIRROR_CUDA_LAUNCH_CHECK("avg_pool_forward_kernel");
}

void avg_pool_backward(cudaStream_t stream, const PoolGeometry& g, const float* dy, float* dx) {
  const PoolShape s = shape_of(g);
  const size_t count = input_count(s);
  if (count == 0) return;
  avg_pool_backward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(s, dy, dx);
  MIRROR_CUDA_LAUNCH_CHECK("avg_pool_backward_kernel");
}

void global_avg_pool_forward(cudaStream_t stream, int64_t batch, int64_t pixels, int64_t channels, const float* x,
                             float* y) {
  const size_t count = static_cast<size_t>(batch * channels);
  if (count == 0 || pixels <= 0) return;
  global_avg_pool_forward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(batch, pixels, channels, x, y);
  MIRROR_CUDA_LAUNCH_CHECK("global_avg_pool_forward_kernel");
}

void global_avg_pool_backward(cudaStream_t stream, int64_t batch, int64_t pixels, int64_t channels, const float* dy,
                              float* dx) {
  const size_t count = static_cast<size_t>(batch * pixels * channels);
  if (count == 0) return;
  global_avg_pool_backward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(batch, pixels, channels, dy, dx);
  MIRROR_CUDA_LAUNCH_CHECK("global_avg_pool_backward_kernel");
}

}  // namespace mirror::cuda::kernels
