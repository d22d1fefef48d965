// The host backend's ops for the layers of a ResNet against naive double-precision references:
// padded and strided convolution with and without bias, max and average pooling with padding,
// global average pooling, the element-wise activations, add and column copies. Outputs are
// poisoned with NaN first, so an element an op forgot to write fails. Batch normalization and
// dropout have their own file (test_host_norm_ops.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>

#include "mirror/engine/error.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "op_test_util.hpp"

namespace mirror {
namespace {

using namespace mirror::testing;

class HostLayerOps : public HostBackendTest {
 protected:
  HostLayerOps() : HostBackendTest(20261129) {}
};

::testing::Message describe(const ConvGeometry& g) {
  return ::testing::Message() << "conv " << g.batch << "x" << g.in_h << "x" << g.in_w << "x" << g.in_c << " -> "
                              << g.out_c << ", kernel " << g.kernel_h << "x" << g.kernel_w << ", stride "
                              << g.stride_h << "x" << g.stride_w << ", pad t/l/b/r " << g.pad_top << "/"
                              << g.pad_left << "/" << g.pad_bottom << "/" << g.pad_right;
}

::testing::Message describe(const PoolGeometry& g) {
  return ::testing::Message() << "pool " << g.batch << "x" << g.in_h << "x" << g.in_w << "x" << g.channels
                              << ", window " << g.pool_h << "x" << g.pool_w << ", stride " << g.stride_h << "x"
                              << g.stride_w << ", pad t/l/b/r " << g.pad_top << "/" << g.pad_left << "/"
                              << g.pad_bottom << "/" << g.pad_right;
}

// "same" padding with stride 2 on even and odd sizes (the odd pixel of padding goes after),
// ResNet's 7x7 stem, 1x1 projections, and an explicit asymmetric padding.
std::vector<ConvGeometry> padded_conv_shapes() {
  // batch, in_h, in_w, in_c, out_c, kernel_h, kernel_w, stride_h, stride_w
  std::vector<ConvGeometry> shapes = {
      same_padded(ConvGeometry{2, 8, 8, 3, 5, 3, 3, 2, 2}),  same_padded(ConvGeometry{1, 7, 7, 5, 3, 3, 3, 2, 2}),
      same_padded(ConvGeometry{2, 9, 6, 3, 4, 3, 3, 1, 1}),  same_padded(ConvGeometry{1, 16, 15, 3, 8, 7, 7, 2, 2}),
      same_padded(ConvGeometry{3, 6, 5, 7, 5, 1, 1, 2, 2}),  same_padded(ConvGeometry{2, 10, 7, 2, 3, 4, 2, 2, 3}),
      {2, 6, 7, 3, 4, 3, 3, 2, 1, 2, 0, 0, 1},
  };
  return shapes;
}

TEST_F(HostLayerOps, PaddedConvolutionWithAndWithoutBias) {
  for (const ConvGeometry& g : padded_conv_shapes()) {
    SCOPED_TRACE(describe(g));
    const Floats x = random_floats(x_count(g), rng_), w = random_floats(g.weight_count(), rng_);
    const Floats b = random_floats(g.out_c, rng_), dy = random_floats(y_count(g), rng_);
    Doubles dw_ref(g.weight_count(), 0.0), db_ref(g.out_c, 0.0), dx_ref(x_count(g), 0.0);
    for (int64_t i = 0; i < y_count(g); ++i) db_ref[i % g.out_c] += dy[i];
    for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) {
      dw_ref[wi] += double{x[xi]} * dy[yi];
      dx_ref[xi] += double{w[wi]} * dy[yi];
    });
    const double taps = static_cast<double>(g.kernel_h * g.kernel_w * g.in_c);
    const double positions = static_cast<double>(g.batch * g.out_h() * g.out_w());
    for (bool bias : {true, false, true}) {  // the third pass finds both variants in the cache
      SCOPED_TRACE(bias ? "with bias" : "without bias");
      const Doubles y_ref = conv_reference(g, to_doubles(x), to_doubles(w), bias ? to_doubles(b) : Doubles{});
      Floats y(y_count(g), kNaN), dw(g.weight_count(), kNaN), db(g.out_c, kNaN), dx(x_count(g), kNaN);
      backend_->conv2d_forward(g, x.data(), w.data(), bias ? b.data() : nullptr, y.data());
      backend_->conv2d_backward_weights(g, x.data(), dy.data(), dw.data(), bias ? db.data() : nullptr);
      backend_->conv2d_backward_data(g, w.data(), dy.data(), dx.data());
      expect_close("conv y", y, y_ref, 1e-5 * std::sqrt(taps), 1e-5);
      expect_close("conv dw", dw, dw_ref, 1e-5 * std::sqrt(positions), 1e-5);
      if (bias) expect_close("conv db", db, db_ref, 1e-5 * std::sqrt(positions), 1e-5);
      expect_close("conv dx", dx, dx_ref, 1e-5 * std::sqrt(taps), 1e-5);
      // Fused with ReLU: the same convolution, clamped at zero.
      Doubles relu_ref = y_ref;
      for (double& v : relu_ref) v = std::max(v, 0.0);
      std::fill(y.begin(), y.end(), kNaN);
      backend_->conv2d_relu_forward(g, x.data(), w.data(), bias ? b.data() : nullptr, y.data());
      expect_close("conv+relu y", y, relu_ref, 1e-5 * std::sqrt(taps), 1e-5);
    }
  }
}

TEST_F(HostLayerOps, ConvolutionRejectsPaddingThatCannotWork) {
  Floats buffer(4096, 0.0f);
  float* p = buffer.data();
  EXPECT_THROW(backend_->conv2d_forward({1, 5, 5, 1, 1, 3, 3, 1, 1, -1, 0, 0, 0}, p, p, p, p), InvalidArgument);
  EXPECT_THROW(backend_->conv2d_forward({1, 2, 2, 1, 1, 5, 5, 1, 1, 1, 1, 1, 1}, p, p, p, p), InvalidArgument);
}

// Same padding (ResNet's 3x3 / 2 max pool, odd and even inputs), leftover rows and columns that no
// window covers, overlapping windows, and many channels (several channel blocks).
std::vector<PoolGeometry> pool_shapes() {
  // batch, in_h, in_w, channels, pool_h, pool_w, stride_h, stride_w
  return {
      same_padded(PoolGeometry{2, 8, 8, 3, 3, 3, 2, 2}),    same_padded(PoolGeometry{1, 7, 7, 5, 3, 3, 2, 2}),
      same_padded(PoolGeometry{2, 5, 5, 3, 2, 2, 2, 2}),    same_padded(PoolGeometry{2, 6, 9, 70, 3, 2, 1, 2}),
      {2, 8, 8, 3, 3, 3, 2, 2},                 {3, 7, 9, 5, 2, 2, 2, 2},
      {1, 9, 7, 130, 3, 2, 3, 2},               {2, 6, 7, 3, 3, 3, 2, 2, 1, 0, 0, 2},
  };
}

TEST_F(HostLayerOps, MaxPoolWithPaddingMatchesReference) {
  for (const PoolGeometry& g : pool_shapes()) {
    SCOPED_TRACE(describe(g));
    // Negative inputs too: a padded position must never win with an implicit zero.
    const Floats x = random_floats(x_count(g), rng_, -2.0f, -0.1f), dy = random_floats(y_count(g), rng_);
    Doubles dx_ref;
    const Doubles y_ref = max_pool_reference(g, to_doubles(x), to_doubles(dy), &dx_ref);
    Floats y(y_count(g), kNaN), dx(x.size(), kNaN);
    backend_->max_pool_forward(g, x.data(), y.data());
    backend_->max_pool_backward(g, x.data(), y.data(), dy.data(), dx.data());
    expect_close("max pool y", y, y_ref, 0.0, 0.0);
    expect_close("max pool dx", dx, dx_ref, 1e-6, 1e-6);
    // After a ReLU (non-negative x): the fused backward equals unpooling, then ReLU's mask.
    Floats relu_x = random_floats(x_count(g), rng_);
    for (float& v : relu_x) v = std::max(v, 0.0f);
    Doubles masked_ref;
    max_pool_reference(g, to_doubles(relu_x), to_doubles(dy), &masked_ref);
    for (size_t i = 0; i < masked_ref.size(); ++i) masked_ref[i] = relu_x[i] > 0 ? masked_ref[i] : 0.0;
    std::fill(dx.begin(), dx.end(), kNaN);
    backend_->max_pool_forward(g, relu_x.data(), y.data());
    backend_->max_pool_relu_backward(g, relu_x.data(), y.data(), dy.data(), dx.data());
    expect_close("max pool relu dx", dx, masked_ref, 1e-6, 1e-6);
  }
}

TEST_F(HostLayerOps, AveragePoolCountsOnlyInsidePositions) {
  for (const PoolGeometry& g : pool_shapes()) {
    SCOPED_TRACE(describe(g));
    const Floats x = random_floats(x_count(g), rng_), dy = random_floats(y_count(g), rng_);
    Doubles dx_ref;
    const Doubles y_ref = avg_pool_reference(g, to_doubles(x), to_doubles(dy), &dx_ref);
    Floats y(y_count(g), kNaN), dx(x.size(), kNaN);
    backend_->avg_pool_forward(g, x.data(), y.data());
    backend_->avg_pool_backward(g, dy.data(), dx.data());
    expect_close("avg pool y", y, y_ref, 1e-6, 1e-6);
    expect_close("avg pool dx", dx, dx_ref, 1e-6, 1e-6);
  }
}

TEST_F(HostLayerOps, PoolingRejectsPaddingAsLargeAsTheWindow) {
  Floats buffer(4096, 0.0f);
  float* p = buffer.data();
  EXPECT_THROW(backend_->max_pool_forward({1, 4, 4, 1, 2, 2, 2, 2, 2, 0, 0, 0}, p, p), InvalidArgument);
  EXPECT_THROW(backend_->avg_pool_forward({1, 4, 4, 1, 2, 2, 2, 2, 0, 0, 0, 2}, p, p), InvalidArgument);
}

TEST_F(HostLayerOps, GlobalAveragePool) {
  struct Sizes { int64_t batch, pixels, channels; };
  for (const Sizes s : {Sizes{1, 1, 1}, Sizes{3, 49, 7}, Sizes{2, 16, 130}, Sizes{5, 9, 3}}) {
    SCOPED_TRACE(::testing::Message() << "global average pool " << s.batch << "x" << s.pixels << "x" << s.channels);
    const Floats x = random_floats(s.batch * s.pixels * s.channels, rng_);
    const Floats dy = random_floats(s.batch * s.channels, rng_);
    Doubles y_ref(dy.size(), 0.0), dx_ref(x.size());
    for (int64_t n = 0; n < s.batch; ++n)
      for (int64_t p = 0; p < s.pixels; ++p)
        for (int64_t c = 0; c < s.channels; ++c) {
          y_ref[n * s.channels + c] += double{x[(n * s.pixels + p) * s.channels + c]} / double(s.pixels);
          dx_ref[(n * s.pixels + p) * s.channels + c] = double{dy[n * s.channels + c]} / double(s.pixels);
        }
    Floats y(dy.size(), kNaN), dx(x.size(), kNaN);
    backend_->global_avg_pool_forward(s.batch, s.pixels, s.channels, x.data(), y.data());
    backend_->global_avg_pool_backward(s.batch, s.pixels, s.channels, dy.data(), dx.data());
    expect_close("gap y", y, y_ref, 1e-6, 1e-6);
    expect_close("gap dx", dx, dx_ref, 1e-7, 1e-6);
  }
}

// y = a(x) and dL/dx in double, from the definitions (GELU: x Phi(x) with the exact erf).
double activation_reference(Activation a, double x) {
  switch (a) {
    case Activation::Linear: return x;
    case Activation::ReLU: return x > 0 ? x : 0;
    case Activation::Sigmoid: return 1 / (1 + std::exp(-x));
    case Activation::Tanh: return std::tanh(x);
    case Activation::GELU: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Activation::SiLU: return x / (1 + std::exp(-x));
    case Activation::Softmax: break;
  }
  return NAN;
}

double activation_derivative(Activation a, double x) {
  constexpr double kPi = 3.14159265358979323846;
  const double s = 1 / (1 + std::exp(-x));
  switch (a) {
    case Activation::Linear: return 1;
    case Activation::ReLU: return x > 0 ? 1 : 0;
    case Activation::Sigmoid: return s * (1 - s);
    case Activation::Tanh: return 1 - std::tanh(x) * std::tanh(x);
    case Activation::GELU:
      return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-x * x / 2) / std::sqrt(2 * kPi);
    case Activation::SiLU: return s * (1 + x * (1 - s));
    case Activation::Softmax: break;
  }
  return NAN;
}

constexpr Activation kElementWise[] = {Activation::Linear, Activation::ReLU, Activation::Sigmoid,
                                       Activation::Tanh,   Activation::GELU, Activation::SiLU};

TEST_F(HostLayerOps, ElementWiseActivationsMatchReference) {
  const int64_t rows = 37, cols = 1001;  // past the parallel threshold
  Floats x = random_floats(rows * cols, rng_, -6.0f, 6.0f);
  x[0] = 90.0f, x[1] = -90.0f, x[2] = 0.0f;  // saturated ends stay finite
  const Floats dy = random_floats(x.size(), rng_);
  for (Activation a : kElementWise) {
    SCOPED_TRACE(to_string(a));
    Doubles y_ref(x.size()), dx_ref(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      y_ref[i] = activation_reference(a, x[i]);
      dx_ref[i] = dy[i] * activation_derivative(a, x[i]);
    }
    Floats y(x.size(), kNaN), dx(x.size(), kNaN);
    backend_->activation_forward(a, rows, cols, x.data(), y.data());
    expect_close("activation y", y, y_ref, 1e-6, 2e-6);
    // Each activation gets only what backward_needs_input says it needs; the other is null.
    const bool needs_x = backward_needs_input(a);
    backend_->activation_backward(a, rows, cols, needs_x ? x.data() : nullptr, needs_x ? nullptr : y.data(), dy.data(),
                                  dx.data());
    expect_close("activation dx", dx, dx_ref, 2e-6, 2e-5);
    // In place: y over x, dx over dy.
    Floats inplace = x, grad = dy;
    backend_->activation_forward(a, rows, cols, inplace.data(), inplace.data());
    EXPECT_EQ(inplace, y);
    backend_->activation_backward(a, rows, cols, needs_x ? x.data() : nullptr, needs_x ? nullptr : y.data(),
                                  grad.data(), grad.data());
    EXPECT_EQ(grad, dx);
  }
}

TEST_F(HostLayerOps, AddAndColumnCopies) {
  const Floats a = random_floats(100003, rng_), b = random_floats(100003, rng_);
  Doubles sum_ref(a.size());
  for (size_t i = 0; i < a.size(); ++i) sum_ref[i] = double{a[i]} + b[i];
  Floats y(a.size(), kNaN), in_place = a;
  backend_->add(a.size(), a.data(), b.data(), y.data());
  backend_->add(a.size(), in_place.data(), b.data(), in_place.data());
  expect_close("a + b", y, sum_ref, 0.0, 1e-7);
  EXPECT_EQ(in_place, y);

  // Concatenation along the last axis: (rows, 3) and (rows, 4) into (rows, 7), then back.
  for (int64_t rows : {int64_t{0}, int64_t{5}, int64_t{9000}}) {
    SCOPED_TRACE(::testing::Message() << rows << " rows");
    const Floats left = random_floats(rows * 3, rng_), right = random_floats(rows * 4, rng_);
    Floats joined(rows * 7, kNaN);
    // With no rows the buffer is empty and its data() may be null, which takes no offset.
    float* const joined_right = rows > 0 ? joined.data() + 3 : joined.data();
    backend_->copy_columns(rows, 3, left.data(), 3, joined.data(), 7, false);
    backend_->copy_columns(rows, 4, right.data(), 4, joined_right, 7, false);
    Doubles joined_ref(joined.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < 7; ++c) joined_ref[r * 7 + c] = c < 3 ? left[r * 3 + c] : right[r * 4 + c - 3];
    expect_close("joined", joined, joined_ref, 0.0, 0.0);
    // The gradient of the right part, accumulated onto what is there already.
    Floats grad = right;
    backend_->copy_columns(rows, 4, joined_right, 7, grad.data(), 4, true);
    Doubles grad_ref(grad.size());
    for (size_t i = 0; i < grad.size(); ++i) grad_ref[i] = 2.0 * right[i];
    expect_close("accumulated", grad, grad_ref, 0.0, 0.0);
  }
}

}  // namespace
}  // namespace mirror
