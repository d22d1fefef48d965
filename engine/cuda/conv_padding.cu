// Explicit zero padding around NHWC images, for the convolutions whose padding cuDNN's descriptors
// cannot express: a descriptor pads both sides of a dimension alike, while Keras's "same" padding
// with strides may pad one pixel more at the bottom and right. The input is copied into a padded
// scratch image (forward, backward-weights), and backward-data's gradient is computed on such an
// image and cropped back.
#include "mirror/engine/cuda/cuda_check.hpp"
#include "mirror/engine/cuda/kernels.hpp"
#include "mirror/engine/cuda/launch.cuh"

namespace mirror::cuda::kernels {
namespace {

// One thread per element of the padded image xp: (batch, padded_h, padded_w, channels)
__global__ void pad_kernel(ImagePadding p, const float* x, float* xp) {
  const int64_t ph = p.padded_h(), pw = p.padded_w();
  const size_t count = static_cast<size_t>(p.batch * ph * pw * p.channels);
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const int64_t c = static_cast<int64_t>(i % p.channels);
    int64_t rest = static_cast<int64_t>(i / p.channels);
    const int64_t w = rest % pw - p.left;
    rest /= pw;
    const int64_t h = rest % ph - p.top;
    const int64_t n = rest / ph;
    const bool inside = h >= 0 && h < p.h && w >= 0 && w < p.w;
    xp[i] = inside ? x[((n * p.h + h) * p.w + w) * p.channels + c] : 0.0f;
  }
}

// One thread per element of the cropped image x: (batch, h, w, channels)
__global__ void crop_kernel(ImagePadding p, const float* xp, float* x) {
  const int64_t ph = p.padded_h(), pw = p.padded_w();
  const size_t count = static_cast<size_t>(p.batch * p.h * p.w * p.channels);
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const int64_t c = static_cast<int64_t>(i % p.channels);
    int64_t rest = static_cast<int64_t>(i / p.channels);
    const int64_t w = rest % p.w;
    rest /= p.w;
    const int64_t h = rest % p.h;
    const int64_t n = rest / p.h;
    x[i] = xp[((n * ph + h + p.top) * pw + w + p.left) * p.channels + c];
  }
}

}  // namespace

void pad_images(cudaStream_t stream, const ImagePadding& p, const float* x, float* xp) {
  const size_t count = static_cast<size_t>(p.batch * p.padded_h() * p.padded_w() * p.channels);
  if (count == 0) return;
  pad_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(p, x, xp);
  MIRROR_CUDA_LAUNCH_CHECK("pad_kernel");
}

void crop_images(cudaStream_t stream, const ImagePadding& p, const float* xp, float* x) {
  const size_t count = static_cast<size_t>(p.batch * p.h * p.w * p.channels);
  if (count == 0) return;
  crop_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(p, xp, x);
  MIRROR_CUDA_LAUNCH_CHECK("crop_kernel");
}

}  // namespace mirror::cuda::kernels
