// Geometry of the windowed ops (convolution, pooling). Tensors are NHWC; convolution kernels are
// HWIO (kernel_h, kernel_w, in_channels, out_channels), Keras's layout. Padding is "valid".
#pragma once

#include <cstdint>

namespace mirror {

struct ConvGeometry {
  int64_t batch = 0;
  int64_t in_h = 0, in_w = 0, in_c = 0;
  int64_t out_c = 0;
  int64_t kernel_h = 0, kernel_w = 0;
  int64_t stride_h = 1, stride_w = 1;

  int64_t out_h() const { return (in_h - kernel_h) / stride_h + 1; }
  int64_t out_w() const { return (in_w - kernel_w) / stride_w + 1; }
  int64_t weight_count() const { return kernel_h * kernel_w * in_c * out_c; }
  // Multiply-adds of the forward pass; backward-data and backward-weights cost the same.
  int64_t macs() const { return batch * out_h() * out_w() * out_c * kernel_h * kernel_w * in_c; }
  friend bool operator==(const ConvGeometry&, const ConvGeometry&) = default;
};

struct PoolGeometry {
  int64_t batch = 0;
  int64_t in_h = 0, in_w = 0, channels = 0;
  int64_t pool_h = 2, pool_w = 2;
  int64_t stride_h = 2, stride_w = 2;

  // Keras's "valid" pooling: windows that do not fit are dropped.
  int64_t out_h() const { return (in_h - pool_h) / stride_h + 1; }
  int64_t out_w() const { return (in_w - pool_w) / stride_w + 1; }
  friend bool operator==(const PoolGeometry&, const PoolGeometry&) = default;
};

}  // namespace mirror
