// Geometry of the windowed ops (convolution, pooling). Tensors are NHWC; convolution kernels are
// HWIO (kernel_h, kernel_w, in_channels, out_channels), Keras's layout. Padding is explicit per
// side, so Keras's "same" padding with strides (which may pad one pixel more at the bottom and
// right than at the top and left) is expressed exactly; see padding_for().
#pragma once

#include <algorithm>
#include <cstdint>

namespace mirror {

enum class Padding { Valid, Same };

// Zeros added before and after one spatial dimension.
struct PadPair {
  int64_t before = 0, after = 0;
  friend bool operator==(const PadPair&, const PadPair&) = default;
};

// Keras / TensorFlow "same": the output has ceil(in / stride) positions and the padding that needs
// is split with the odd pixel after (bottom / right). "valid": no padding.
inline PadPair padding_for(Padding padding, int64_t in, int64_t window, int64_t stride) {
  if (padding == Padding::Valid) return {};
  const int64_t out = (in + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + window - in, 0);
  return {total / 2, total - total / 2};
}

struct ConvGeometry {
  int64_t batch = 0;
  int64_t in_h = 0, in_w = 0, in_c = 0;
  int64_t out_c = 0;
  int64_t kernel_h = 0, kernel_w = 0;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;

  int64_t out_h() const { return (in_h + pad_top + pad_bottom - kernel_h) / stride_h + 1; }
  int64_t out_w() const { return (in_w + pad_left + pad_right - kernel_w) / stride_w + 1; }
  bool padded() const { return pad_top || pad_left || pad_bottom || pad_right; }
  // Padding the same on both sides of each dimension (what cuDNN's descriptors can express).
  bool symmetric() const { return pad_top == pad_bottom && pad_left == pad_right; }
  int64_t weight_count() const { return kernel_h * kernel_w * in_c * out_c; }
  // Multiply-adds of the forward pass (padding included); backward-data and backward-weights cost the same.
  int64_t macs() const { return batch * out_h() * out_w() * out_c * kernel_h * kernel_w * in_c; }
  friend bool operator==(const ConvGeometry&, const ConvGeometry&) = default;
};

struct PoolGeometry {
  int64_t batch = 0;
  int64_t in_h = 0, in_w = 0, channels = 0;
  int64_t pool_h = 2, pool_w = 2;
  int64_t stride_h = 2, stride_w = 2;
  // Padded positions never win a max and are not counted in an average (Keras's "same" pooling).
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;

  // "valid" pooling drops windows that do not fit.
  int64_t out_h() const { return (in_h + pad_top + pad_bottom - pool_h) / stride_h + 1; }
  int64_t out_w() const { return (in_w + pad_left + pad_right - pool_w) / stride_w + 1; }
  bool padded() const { return pad_top || pad_left || pad_bottom || pad_right; }
  friend bool operator==(const PoolGeometry&, const PoolGeometry&) = default;
};

}  // namespace mirror
