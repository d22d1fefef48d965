// The host's max-pooling, in plain C++ over NHWC: the inner loops run along the channels, which
// are contiguous, so the compiler vectorises them. (oneDNN 2.6's pooling took 1-2.7 ms for the
// reference batch here, more than the convolution before it.) Padding is handled by clipping each
// window to the input (pool_window.hpp), so padded positions never win. Each image's loops run as
// hot_loops (cpu_isa.hpp; they ran 1.3-1.4x slower at the SSE2 baseline than with AVX2), and the
// per-window helpers are always inlined into them: a call would reach the baseline code.
#include <algorithm>
#include <cstring>

#include "mirror/engine/elementwise.hpp"
#include "mirror/engine/host/host_backend_impl.hpp"
#include "mirror/engine/host/pool_window.hpp"

namespace mirror::host {
namespace {

// Channels handled per pass of the backward search, so its per-channel state fits on the stack.
constexpr int64_t kChannelBlock = 64;

// One output pixel: y[c] = max over the window w, whose top-left inside pixel is `x`.
[[gnu::always_inline]] inline void pool_pixel(const PoolGeometry& g, const PoolWindow& w, const float* x, float* y) {
  const int64_t row_stride = g.in_w * g.channels;
  std::memcpy(y, x, static_cast<size_t>(g.channels) * sizeof(float));
  for (int64_t i = 0; i < w.rows; ++i) {
    for (int64_t j = 0; j < w.cols; ++j) {
      if (i == 0 && j == 0) continue;
      const float* in = x + i * row_stride + j * g.channels;
      for (int64_t c = 0; c < g.channels; ++c) y[c] = ew::pool_max(y[c], in[c]);
    }
  }
}

// For channels [c0, c0 + count) of window w, whose top-left inside pixel is `x`: the maximum and
// its position in row-major order over the inside positions (ew::becomes_max: the first maximum,
// or the first NaN). Branch-free, so it vectorises along the channels.
[[gnu::always_inline]] inline void find_window_max(const PoolGeometry& g, const PoolWindow& w, const float* x, int64_t c0, int64_t count,
                     float* best, int32_t* best_position) {
  const int64_t row_stride = g.in_w * g.channels;
  for (int64_t c = 0; c < count; ++c) {
    best[c] = x[c0 + c];
    best_position[c] = 0;
  }
  int32_t position = 0;
  for (int64_t i = 0; i < w.rows; ++i) {
    for (int64_t j = 0; j < w.cols; ++j, ++position) {
      const float* in = x + i * row_stride + j * g.channels + c0;
      for (int64_t c = 0; c < count; ++c) {
        // The position's select is bitwise: GCC's generic tuning turns `a = p ? b : a` into a
        // masked store, microcoded on AMD CPUs (the AVX2 build ran 1.7x slower than SSE2).
        const bool takes = ew::becomes_max(in[c], best[c]);
        const int32_t greater = -static_cast<int32_t>(takes);  // all ones or zero
        best[c] = takes ? in[c] : best[c];
        best_position[c] ^= (best_position[c] ^ position) & greater;
      }
    }
  }
}

// One output pixel's gradient: for channels [c0, c0 + count), dy[c] goes to the first maximum of
// window w, added into dx because windows may overlap. Two branch-free passes over the window
// (find, then add where the position matches) vectorise along the channels, where a scatter
// would not. x and dx point at the window's top-left inside pixel.
[[gnu::always_inline]] inline void unpool_pixel(const PoolGeometry& g, const PoolWindow& w, const float* x, const float* dy, float* dx, int64_t c0,
                  int64_t count) {
  const int64_t row_stride = g.in_w * g.channels;
  float best[kChannelBlock];
  int32_t best_position[kChannelBlock];
  find_window_max(g, w, x, c0, count, best, best_position);
  int32_t position = 0;
  for (int64_t i = 0; i < w.rows; ++i) {
    for (int64_t j = 0; j < w.cols; ++j, ++position) {
      float* out = dx + i * row_stride + j * g.channels + c0;
      for (int64_t c = 0; c < count; ++c) out[c] += best_position[c] == position ? dy[c0 + c] : 0.0f;
    }
  }
}

// The common 2x2 window, written out so that the compiler vectorises along channels with no
// per-window bookkeeping. `row` is the distance between vertically adjacent input pixels.
[[gnu::always_inline]] inline void pool_2x2(const float* x, int64_t row, int64_t channels, float* y) {
  const float *a = x, *b = x + channels, *c = x + row, *d = x + row + channels;
#pragma omp simd
  for (int64_t k = 0; k < channels; ++k) {
    y[k] = ew::pool_max(ew::pool_max(a[k], b[k]), ew::pool_max(c[k], d[k]));
  }
}

// Non-overlapping, unpadded windows (strides == pool size, the usual case): every dx element
// belongs to at most one window, so it is written once, directly, with no zeroing pass and no
// accumulation. With `relu_input`, x is a ReLU's output and the gradient is also masked by x > 0:
// the window's maximum is then positive or the whole window gets zero.
[[gnu::always_inline]] inline void unpool_pixel_direct(const PoolGeometry& g, const float* x, const float* dy, float* dx, int64_t c0, int64_t count,
                         bool relu_input) {
  const int64_t row_stride = g.in_w * g.channels;
  const PoolWindow full{0, 0, g.pool_h, g.pool_w};
  float best[kChannelBlock], grad[kChannelBlock];
  int32_t best_position[kChannelBlock];
  find_window_max(g, full, x, c0, count, best, best_position);
  for (int64_t c = 0; c < count; ++c) grad[c] = (!relu_input || best[c] > 0.0f) ? dy[c0 + c] : 0.0f;
  int32_t position = 0;
  for (int64_t i = 0; i < g.pool_h; ++i) {
    for (int64_t j = 0; j < g.pool_w; ++j, ++position) {
      float* out = dx + i * row_stride + j * g.channels + c0;
      for (int64_t c = 0; c < count; ++c) out[c] = best_position[c] == position ? grad[c] : 0.0f;
    }
  }
}

[[gnu::always_inline]] inline void unpool_image_direct(const PoolGeometry& g, const float* x, const float* dy, float* dx, bool relu_input) {
  const int64_t out_h = g.out_h(), out_w = g.out_w(), row_size = g.in_w * g.channels;
  for (int64_t oh = 0; oh < out_h; ++oh) {
    float* dx_row = dx + oh * g.pool_h * row_size;
    for (int64_t ow = 0; ow < out_w; ++ow) {
      const int64_t corner = ow * g.pool_w * g.channels;
      const float* dy_pixel = dy + (oh * out_w + ow) * g.channels;
      for (int64_t c0 = 0; c0 < g.channels; c0 += kChannelBlock)
        unpool_pixel_direct(g, x + oh * g.pool_h * row_size + corner, dy_pixel, dx_row + corner, c0,
                            std::min(kChannelBlock, g.channels - c0), relu_input);
    }
    // Columns to the right of the last window get no gradient.
    for (int64_t i = 0; i < g.pool_h; ++i)
      std::fill(dx_row + i * row_size + out_w * g.pool_w * g.channels, dx_row + (i + 1) * row_size, 0.0f);
  }
  std::fill(dx + out_h * g.pool_h * row_size, dx + g.in_h * row_size, 0.0f);  // rows below the last window
}

bool windows_tile(const PoolGeometry& g) {
  return g.stride_h == g.pool_h && g.stride_w == g.pool_w && !g.padded();
}

// The general backward of one image: windows may overlap or be clipped by padding. dx's rows are
// zeroed just before the first window that touches them, while they are in cache, not in a
// separate pass (windows' bottom rows never move up as oh grows).
[[gnu::always_inline]] inline void unpool_image(const PoolGeometry& g, const float* x, const float* dy, float* dx) {
  const int64_t out_h = g.out_h(), out_w = g.out_w(), row_size = g.in_w * g.channels;
  int64_t zeroed_rows = 0;
  for (int64_t oh = 0; oh < out_h; ++oh) {
    const PoolWindow first = pool_window(g, oh, 0);
    const int64_t window_end = first.h0 + first.rows;
    if (window_end > zeroed_rows) {
      std::fill(dx + zeroed_rows * row_size, dx + window_end * row_size, 0.0f);
      zeroed_rows = window_end;
    }
    for (int64_t ow = 0; ow < out_w; ++ow) {
      const PoolWindow w = pool_window(g, oh, ow);
      const int64_t corner = (w.h0 * g.in_w + w.w0) * g.channels;
      const float* dy_pixel = dy + (oh * out_w + ow) * g.channels;
      for (int64_t c0 = 0; c0 < g.channels; c0 += kChannelBlock)
        unpool_pixel(g, w, x + corner, dy_pixel, dx + corner, c0, std::min(kChannelBlock, g.channels - c0));
    }
  }
  std::fill(dx + zeroed_rows * row_size, dx + g.in_h * row_size, 0.0f);  // rows below the last window
}

// The forward of one image.
[[gnu::always_inline]] inline void pool_image(const PoolGeometry& g, const float* x, float* y) {
  const int64_t out_h = g.out_h(), out_w = g.out_w();
  const bool two_by_two = g.pool_h == 2 && g.pool_w == 2;
  // Unpadded 2x2 windows (the reference model's): no clipping to compute per pixel, which cost
  // more than the four-way maximum itself at 32 channels.
  const bool plain_two_by_two = two_by_two && !g.padded();
  for (int64_t oh = 0; oh < out_h; ++oh) {
    if (plain_two_by_two) {
      const float* row = x + oh * g.stride_h * g.in_w * g.channels;
      float* out = y + oh * out_w * g.channels;
      for (int64_t ow = 0; ow < out_w; ++ow)
        pool_2x2(row + ow * g.stride_w * g.channels, g.in_w * g.channels, g.channels, out + ow * g.channels);
      continue;
    }
    for (int64_t ow = 0; ow < out_w; ++ow) {
      const PoolWindow w = pool_window(g, oh, ow);
      const float* corner = x + (w.h0 * g.in_w + w.w0) * g.channels;
      float* out = y + (oh * out_w + ow) * g.channels;
      if (two_by_two && w.rows == 2 && w.cols == 2) {
        pool_2x2(corner, g.in_w * g.channels, g.channels, out);
      } else {
        pool_pixel(g, w, corner, out);
      }
    }
  }
}

}  // namespace

void HostBackend::max_pool_forward(const PoolGeometry& g, const float* x, float* y) {
  check_pool_geometry(g, "max-pooling");
  const int64_t in_image = g.in_h * g.in_w * g.channels, out_image = g.out_h() * g.out_w() * g.channels;
#pragma omp parallel for num_threads(threads_) if (g.batch * in_image >= (int64_t{1} << 15))
  for (int64_t n = 0; n < g.batch; ++n)
    hot_loop([&]() MIRROR_ALWAYS_INLINE { pool_image(g, x + n * in_image, y + n * out_image); });
}

void HostBackend::max_pool_relu_backward(const PoolGeometry& g, const float* x, const float* y, const float* dy,
                                         float* dx) {
  if (windows_tile(g)) {
    unpool(g, x, dy, dx, true);
  } else {
    Backend::max_pool_relu_backward(g, x, y, dy, dx);
  }
}

void HostBackend::unpool(const PoolGeometry& g, const float* x, const float* dy, float* dx, bool relu_input) {
  check_pool_geometry(g, "max-pooling");
  const int64_t in_image = g.in_h * g.in_w * g.channels, out_image = g.out_h() * g.out_w() * g.channels;
#pragma omp parallel for num_threads(threads_) if (g.batch * in_image >= (int64_t{1} << 15))
  for (int64_t n = 0; n < g.batch; ++n)
    hot_loop([&]() MIRROR_ALWAYS_INLINE {
      unpool_image_direct(g, x + n * in_image, dy + n * out_image, dx + n * in_image, relu_input);
    });
}

void HostBackend::max_pool_backward(const PoolGeometry& g, const float* x, const float* /*y*/, const float* dy,
                                    float* dx) {
  // The maximum is searched again in x rather than matched against y: same cost, and it cannot
  // miss when y was rounded or altered in between.
  if (windows_tile(g)) return unpool(g, x, dy, dx, false);
  check_pool_geometry(g, "max-pooling");
  const int64_t in_image = g.in_h * g.in_w * g.channels, out_image = g.out_h() * g.out_w() * g.channels;
  // Each image's dx is written only by the thread that owns the image.
#pragma omp parallel for num_threads(threads_) if (g.batch * in_image >= (int64_t{1} << 15))
  for (int64_t n = 0; n < g.batch; ++n)
    hot_loop([&]() MIRROR_ALWAYS_INLINE { unpool_image(g, x + n * in_image, dy + n * out_image, dx + n * in_image); });
}

}  // namespace mirror::host
