// The host's average and global average pooling, in plain C++ over NHWC like the max-pooling:
// the inner loops run along the contiguous channels and vectorise. An average counts only the
// window's positions inside the input (Keras's "same" average pooling). Each image is summed by
// one thread in a fixed order, so results do not depend on the thread count.
#include <algorithm>

#include "engine/host/host_backend_impl.hpp"
#include "engine/host/pool_window.hpp"

namespace mirror::host {
namespace {

void check_global_sizes(int64_t batch, int64_t pixels, int64_t channels) {
  MIRROR_REQUIRE(batch >= 0 && pixels > 0 && channels > 0, InvalidArgument,
                 "invalid global average pooling sizes: batch ", batch, ", ", pixels, " pixels, ", channels,
                 " channels");
}

}  // namespace

void HostBackend::avg_pool_forward(const PoolGeometry& g, const float* x, float* y) {
  check_pool_geometry(g, "average pooling");
  const int64_t out_h = g.out_h(), out_w = g.out_w(), channels = g.channels;
  const int64_t in_image = g.in_h * g.in_w * channels, out_image = out_h * out_w * channels;
#pragma omp parallel for num_threads(threads_) if (g.batch * in_image >= kParallelMinCount)
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t oh = 0; oh < out_h; ++oh) {
      for (int64_t ow = 0; ow < out_w; ++ow) {
        const PoolWindow w = pool_window(g, oh, ow);
        float* out = y + n * out_image + (oh * out_w + ow) * channels;
        std::fill(out, out + channels, 0.0f);
        for (int64_t i = 0; i < w.rows; ++i) {
          for (int64_t j = 0; j < w.cols; ++j) {
            const float* in = x + n * in_image + ((w.h0 + i) * g.in_w + w.w0 + j) * channels;
            for (int64_t c = 0; c < channels; ++c) out[c] += in[c];
          }
        }
        const float inv = 1.0f / static_cast<float>(w.count());
        for (int64_t c = 0; c < channels; ++c) out[c] *= inv;
      }
    }
  }
}

void HostBackend::avg_pool_backward(const PoolGeometry& g, const float* dy, float* dx) {
  check_pool_geometry(g, "average pooling");
  const int64_t out_h = g.out_h(), out_w = g.out_w(), channels = g.channels;
  const int64_t in_image = g.in_h * g.in_w * channels, out_image = out_h * out_w * channels;
  // Windows may overlap, so each image's dx is zeroed and then accumulated, by the one thread that
  // owns the image.
#pragma omp parallel for num_threads(threads_) if (g.batch * in_image >= kParallelMinCount)
  for (int64_t n = 0; n < g.batch; ++n) {
    float* dx_image = dx + n * in_image;
    std::fill(dx_image, dx_image + in_image, 0.0f);
    for (int64_t oh = 0; oh < out_h; ++oh) {
      for (int64_t ow = 0; ow < out_w; ++ow) {
        const PoolWindow w = pool_window(g, oh, ow);
        const float* grad = dy + n * out_image + (oh * out_w + ow) * channels;
        const float inv = 1.0f / static_cast<float>(w.count());
        for (int64_t i = 0; i < w.rows; ++i) {
          for (int64_t j = 0; j < w.cols; ++j) {
            float* out = dx_image + ((w.h0 + i) * g.in_w + w.w0 + j) * channels;
            for (int64_t c = 0; c < channels; ++c) out[c] += grad[c] * inv;
          }
        }
      }
    }
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
