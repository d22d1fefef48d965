// The host's average and global average pooling, in plain C++ over NHWC like the max-pooling:
// the inner loops run along the contiguous channels and vectorise. An average counts only the
// window's positions inside the input (Keras's "same" average pooling). Each image is summed by
// one thread in a fixed order, so results do not depend on the thread count.
#include <algorithm>

#include "mirror/engine/host/host_backend_impl.hpp"
#include "mirror/engine/host/pool_window.hpp"

namespace mirror::host {
namespace {

void check_global_sizes(int64_t batch, int64_t pixels, int64_t channels) {
  MIRROR_REQUIRE(batch >= 0 && pixels > 0 && channels > 0, InvalidArgument,
                 "invalid global average pooling sizes: batch ", batch, ", ", pixels, " pixels, ", channels,
                 " channels");
}

// Calls f(window, offset) for each output pixel of one image: its window's inside part, and the
// pixel's offset in the image's output.
// Channels summed per pass, so the sums of a window stay in registers.
constexpr int64_t kChannelBlock = 32;

template <class F>
void for_each_window(const PoolGeometry& g, const F& f) {
  for (int64_t oh = 0; oh < g.out_h(); ++oh)
    for (int64_t ow = 0; ow < g.out_w(); ++ow) f(pool_window(g, oh, ow), (oh * g.out_w() + ow) * g.channels);
}

// Calls f(offset) for each inside position of window w in row-major order, with the position's
// offset in the image's input.
template <class F>
void for_each_inside(const PoolGeometry& g, const PoolWindow& w, const F& f) {
  for (int64_t i = 0; i < w.rows; ++i)
    for (int64_t j = 0; j < w.cols; ++j) f(((w.h0 + i) * g.in_w + w.w0 + j) * g.channels);
}

}  // namespace

void HostBackend::avg_pool_forward(const PoolGeometry& g, const float* x, float* y) {
  check_pool_geometry(g, "average pooling");
  const int64_t channels = g.channels, in_image = g.in_h * g.in_w * channels;
  const int64_t out_image = g.out_h() * g.out_w() * channels;
#pragma omp parallel for num_threads(threads_) if (g.batch * in_image >= kParallelMinCount)
  for (int64_t n = 0; n < g.batch; ++n) {
    const float* x_image = x + n * in_image;
    for_each_window(g, [&](const PoolWindow& w, int64_t offset) {
      float* out = y + n * out_image + offset;
      const float inv = 1.0f / static_cast<float>(w.count());
      // A block of channels summed in registers, stored once.
      for (int64_t c0 = 0; c0 < channels; c0 += kChannelBlock) {
        const int64_t count = std::min(kChannelBlock, channels - c0);
        float sum[kChannelBlock] = {};
        for_each_inside(g, w, [&](int64_t at) {
          const float* in = x_image + at + c0;
#pragma omp simd
          for (int64_t c = 0; c < count; ++c) sum[c] += in[c];
        });
        for (int64_t c = 0; c < count; ++c) out[c0 + c] = sum[c] * inv;
      }
    });
  }
}

void HostBackend::avg_pool_backward(const PoolGeometry& g, const float* dy, float* dx) {
  check_pool_geometry(g, "average pooling");
  const int64_t channels = g.channels, in_image = g.in_h * g.in_w * channels;
  const int64_t out_image = g.out_h() * g.out_w() * channels;
  // Windows may overlap, so each image's dx is zeroed and then accumulated, by the one thread that
  // owns the image.
#pragma omp parallel for num_threads(threads_) if (g.batch * in_image >= kParallelMinCount)
  for (int64_t n = 0; n < g.batch; ++n) {
    float* dx_image = dx + n * in_image;
    std::fill(dx_image, dx_image + in_image, 0.0f);
    for_each_window(g, [&](const PoolWindow& w, int64_t offset) {
      const float* grad = dy + n * out_image + offset;
      const float inv = 1.0f / static_cast<float>(w.count());
      for_each_inside(g, w, [&](int64_t at) {
        float* out = dx_image + at;
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) out[c] += grad[c] * inv;
      });
    });
  }
}

void HostBackend::global_avg_pool_forward(int64_t batch, int64_t pixels, int64_t channels, const float* x, float* y) {
  check_global_sizes(batch, pixels, channels);
  const float inv = 1.0f / static_cast<float>(pixels);
#pragma omp parallel for num_threads(threads_) if (batch * pixels * channels >= kParallelMinCount)
  for (int64_t n = 0; n < batch; ++n) {
    float* out = y + n * channels;
    std::fill(out, out + channels, 0.0f);
    for (int64_t p = 0; p < pixels; ++p) {
      const float* in = x + (n * pixels + p) * channels;
      for (int64_t c = 0; c < channels; ++c) out[c] += in[c];
    }
    for (int64_t c = 0; c < channels; ++c) out[c] *= inv;
  }
}

void HostBackend::global_avg_pool_backward(int64_t batch, int64_t pixels, int64_t channels, const float* dy,
                                           float* dx) {
  check_global_sizes(batch, pixels, channels);
  const float inv = 1.0f / static_cast<float>(pixels);
#pragma omp parallel for num_threads(threads_) if (batch * pixels * channels >= kParallelMinCount)
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t p = 0; p < pixels; ++p) {
      float* out = dx + (n * pixels + p) * channels;
      for (int64_t c = 0; c < channels; ++c) out[c] = dy[n * channels + c] * inv;
    }
  }
}

}  // namespace mirror::host
