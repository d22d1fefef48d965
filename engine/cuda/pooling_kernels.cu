// Max pooling, NHWC, "valid" windows. Backward gives each dy to the FIRST maximum of its window
// (row-major window order), as engine/backend.hpp requires; it recomputes that position from x
// rather than storing indices, and runs one thread per input element so that overlapping windows
// sum without atomics and every dx element is written.
#include "engine/cuda/cuda_check.hpp"
#include "engine/cuda/kernels.hpp"
#include "engine/cuda/launch.cuh"

namespace mirror::cuda::kernels {
namespace {

struct PoolShape {
  int64_t batch, in_h, in_w, channels, pool_h, pool_w, stride_h, stride_w, out_h, out_w;
};

PoolShape shape_of(const PoolGeometry& g) {
  return {g.batch, g.in_h, g.in_w, g.channels, g.pool_h, g.pool_w, g.stride_h, g.stride_w, g.out_h(), g.out_w()};
}

// Offset in x (within image n, channel c) of the first maximum of window (oh, ow).
__device__ inline int64_t first_max_offset(const PoolShape& s, const float* x_nc, int64_t oh, int64_t ow) {
  const int64_t h0 = oh * s.stride_h, w0 = ow * s.stride_w;
  int64_t best = (h0 * s.in_w + w0) * s.channels;
  float best_value = x_nc[best];
  for (int64_t i = 0; i < s.pool_h; ++i) {
    for (int64_t j = 0; j < s.pool_w; ++j) {
      const int64_t offset = ((h0 + i) * s.in_w + (w0 + j)) * s.channels;
      if (x_nc[offset] > best_value) {
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
    const int64_t c = static_cast<int64_t>(i % s.channels);
    int64_t rest = static_cast<int64_t>(i / s.channels);
    const int64_t ow = rest % s.out_w;
    rest /= s.out_w;
    const int64_t oh = rest % s.out_h;
    const int64_t n = rest / s.out_h;
    const float* x_nc = x + n * s.in_h * s.in_w * s.channels + c;
    y[i] = x_nc[first_max_offset(s, x_nc, oh, ow)];
  }
}

// One thread per input element. dx: (batch, in_h, in_w, channels)
__global__ void max_pool_backward_kernel(PoolShape s, const float* x, const float* dy, float* dx) {
  const size_t count = static_cast<size_t>(s.batch * s.in_h * s.in_w * s.channels);
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const int64_t c = static_cast<int64_t>(i % s.channels);
    int64_t rest = static_cast<int64_t>(i / s.channels);
    const int64_t w = rest % s.in_w;
    rest /= s.in_w;
    const int64_t h = rest % s.in_h;
    const int64_t n = rest / s.in_h;
    const float* x_nc = x + n * s.in_h * s.in_w * s.channels + c;
    const int64_t self = (h * s.in_w + w) * s.channels;
    // Windows (oh, ow) with oh*stride_h <= h < oh*stride_h + pool_h, likewise for w.
    const int64_t oh_lo = h - s.pool_h + 1 <= 0 ? 0 : (h - s.pool_h + s.stride_h) / s.stride_h;
    const int64_t oh_hi = min(s.out_h - 1, h / s.stride_h);
    const int64_t ow_lo = w - s.pool_w + 1 <= 0 ? 0 : (w - s.pool_w + s.stride_w) / s.stride_w;
    const int64_t ow_hi = min(s.out_w - 1, w / s.stride_w);
    float sum = 0.0f;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh) {
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        if (first_max_offset(s, x_nc, oh, ow) == self)
          sum += dy[((n * s.out_h + oh) * s.out_w + ow) * s.channels + c];
      }
    }
    dx[i] = sum;
  }
}

}  // namespace

void max_pool_forward(cudaStream_t stream, const PoolGeometry& g, const float* x, float* y) {
  const PoolShape s = shape_of(g);
  if (s.batch <= 0 || s.out_h <= 0 || s.out_w <= 0 || s.channels <= 0) return;
  const size_t count = static_cast<size_t>(s.batch * s.out_h * s.out_w * s.channels);
  max_pool_forward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(s, x, y);
  MIRROR_CUDA_LAUNCH_CHECK("max_pool_forward_kernel");
}

void max_pool_backward(cudaStream_t stream, const PoolGeometry& g, const float* x, const float* dy, float* dx) {
  const PoolShape s = shape_of(g);
  if (s.batch <= 0 || s.in_h <= 0 || s.in_w <= 0 || s.channels <= 0) return;
  const size_t count = static_cast<size_t>(s.batch * s.in_h * s.in_w * s.channels);
  max_pool_backward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(s, x, dy, dx);
  MIRROR_CUDA_LAUNCH_CHECK("max_pool_backward_kernel");
}

}  // namespace mirror::cuda::kernels
