// Helpers shared by the op tests: random inputs, tolerance checks, central finite differences, and
// naive double-precision references of the windowed ops (convolution and pooling with explicit
// padding). The references are written from the definitions in engine/backend.hpp and
// engine/geometry.hpp, never from the code under test.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "mirror/engine/geometry.hpp"
#include "mirror/engine/host/host_backend.hpp"

namespace mirror::testing {

using Floats = std::vector<float>;
using Doubles = std::vector<double>;
using Loss = std::function<double(const Doubles&)>;
inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline Floats random_floats(size_t count, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Floats v(count);
  for (float& x : v) x = dist(rng);
  return v;
}

inline Doubles to_doubles(std::span<const float> v) { return Doubles(v.begin(), v.end()); }

inline double dot(const Doubles& a, const Doubles& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

// A two-thread host backend bound to the test's thread, and a generator seeded per suite so each
// suite draws its own fixed inputs.
class HostBackendTest : public ::testing::Test {
 protected:
  explicit HostBackendTest(uint32_t seed) : rng_(seed) {}
  void SetUp() override { backend_->bind_current_thread(); }
  std::unique_ptr<Backend> backend_ = make_host_backend(2);
  std::mt19937 rng_;
};

// |got - ref| <= atol + rtol |ref| element-wise (NaN fails); prints the first mismatches.
inline void expect_close(const char* what, std::span<const float> got, std::span<const double> ref, double atol,
                         double rtol) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::abs(static_cast<double>(got[i]) - ref[i]);
    if (diff <= atol + rtol * std::abs(ref[i])) continue;
    if (++bad <= 5) ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", expected " << ref[i];
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " elements out of tolerance (atol "
                     << atol << ", rtol " << rtol << ")";
}

// dL/d(at) by central differences, one element at a time.
inline Doubles finite_difference(const Loss& loss, Doubles at, double h) {
  Doubles grad(at.size());
  for (size_t i = 0; i < at.size(); ++i) {
    const double v = at[i];
    at[i] = v + h;
    const double up = loss(at);
    at[i] = v - h;
    const double down = loss(at);
    at[i] = v;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

// The float analytic gradient within 1e-3 relative of the numeric one (plus 1e-4 of the largest
// component, so components near zero are judged on the gradient's scale).
inline void expect_gradient(const char* what, std::span<const float> analytic, const Doubles& numeric) {
  ASSERT_EQ(analytic.size(), numeric.size()) << what;
  double scale = 0;
  for (double g : numeric) scale = std::max(scale, std::abs(g));
  ASSERT_GT(scale, 0.0) << what << ": the numeric gradient is all zero, the check would prove nothing";
  size_t bad = 0;
  for (size_t i = 0; i < numeric.size(); ++i) {
    const double diff = std::abs(double{analytic[i]} - numeric[i]);
    if (diff <= 1e-4 * scale + 1e-3 * std::abs(numeric[i])) continue;
    if (++bad <= 5) ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << ", numeric " << numeric[i];
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << numeric.size() << " components disagree";
}

// ---- batch normalization ----

// One training step of batch normalization over (rows, channels), composed from the backend's
// ops as a layer composes them: sums shifted by `shift`, moments over all rows, forward, then
// backward_sums and backward_data for dy. Every output starts as NaN.
struct BatchNormStep {
  Floats sums, mean, var, invstd, y, dsums, dx;
};

inline BatchNormStep batch_norm_step(Backend& b, int64_t rows, int64_t channels, const Floats& x, const Floats& shift,
                                     const Floats& gamma, const Floats& beta, const Floats& dy, float epsilon) {
  const auto c = static_cast<size_t>(channels);
  BatchNormStep s{Floats(2 * c, kNaN), Floats(c, kNaN), Floats(c, kNaN), Floats(c, kNaN),
                  Floats(x.size(), kNaN), Floats(2 * c, kNaN), Floats(x.size(), kNaN)};
  b.batch_norm_sums(rows, channels, x.data(), shift.data(), s.sums.data());
  b.batch_norm_moments(channels, double(rows), epsilon, shift.data(), s.sums.data(), s.mean.data(), s.var.data(),
                       s.invstd.data());
  b.batch_norm_forward(rows, channels, x.data(), s.mean.data(), s.invstd.data(), gamma.data(), beta.data(), s.y.data());
  b.batch_norm_backward_sums(rows, channels, x.data(), dy.data(), s.mean.data(), s.invstd.data(), s.dsums.data());
  b.batch_norm_backward_data(rows, channels, x.data(), dy.data(), s.mean.data(), s.invstd.data(), gamma.data(),
                             s.dsums.data(), double(rows), s.dx.data());
  return s;
}

// ---- windowed ops ----

// Keras's "same" padding for a convolution or pooling geometry (padding_for on each dimension).
inline ConvGeometry same_padded(ConvGeometry g) {
  const PadPair h = padding_for(Padding::Same, g.in_h, g.kernel_h, g.stride_h);
  const PadPair w = padding_for(Padding::Same, g.in_w, g.kernel_w, g.stride_w);
  g.pad_top = h.before, g.pad_bottom = h.after, g.pad_left = w.before, g.pad_right = w.after;
  return g;
}
inline PoolGeometry same_padded(PoolGeometry g) {
  const PadPair h = padding_for(Padding::Same, g.in_h, g.pool_h, g.stride_h);
  const PadPair w = padding_for(Padding::Same, g.in_w, g.pool_w, g.stride_w);
  g.pad_top = h.before, g.pad_bottom = h.after, g.pad_left = w.before, g.pad_right = w.after;
  return g;
}

inline int64_t x_count(const ConvGeometry& g) { return g.batch * g.in_h * g.in_w * g.in_c; }
inline int64_t y_count(const ConvGeometry& g) { return g.batch * g.out_h() * g.out_w() * g.out_c; }
inline int64_t x_count(const PoolGeometry& g) { return g.batch * g.in_h * g.in_w * g.channels; }
inline int64_t y_count(const PoolGeometry& g) { return g.batch * g.out_h() * g.out_w() * g.channels; }

// Calls f(x_index, w_index, y_index) for every multiply-add of an NHWC/HWIO convolution whose tap
// lies inside the input (taps on the zero padding add nothing).
inline void for_each_tap(const ConvGeometry& g, const std::function<void(int64_t, int64_t, int64_t)>& f) {
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t oh = 0; oh < g.out_h(); ++oh)
      for (int64_t ow = 0; ow < g.out_w(); ++ow)
        for (int64_t kh = 0; kh < g.kernel_h; ++kh)
          for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
            const int64_t ih = oh * g.stride_h - g.pad_top + kh, iw = ow * g.stride_w - g.pad_left + kw;
            if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
            for (int64_t ic = 0; ic < g.in_c; ++ic)
              for (int64_t oc = 0; oc < g.out_c; ++oc) {
                const int64_t xi = ((n * g.in_h + ih) * g.in_w + iw) * g.in_c + ic;
                const int64_t wi = ((kh * g.kernel_w + kw) * g.in_c + ic) * g.out_c + oc;
                f(xi, wi, ((n * g.out_h() + oh) * g.out_w() + ow) * g.out_c + oc);
              }
          }
}

// y = conv(x, w) + b; b may be empty (no bias).
inline Doubles conv_reference(const ConvGeometry& g, const Doubles& x, const Doubles& w, const Doubles& b) {
  Doubles y(static_cast<size_t>(y_count(g)), 0.0);
  if (!b.empty())
    for (size_t i = 0; i < y.size(); ++i) y[i] = b[i % static_cast<size_t>(g.out_c)];
  for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) { y[yi] += x[xi] * w[wi]; });
  return y;
}

// Calls f(y_index, x_indices) for every output element of a pooling, with the input positions of
// its window that lie inside the input, in row-major window order.
inline void for_each_window(const PoolGeometry& g, const std::function<void(int64_t, const std::vector<int64_t>&)>& f) {
  std::vector<int64_t> inside;
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t oh = 0; oh < g.out_h(); ++oh)
      for (int64_t ow = 0; ow < g.out_w(); ++ow)
        for (int64_t c = 0; c < g.channels; ++c) {
          inside.clear();
          for (int64_t i = 0; i < g.pool_h; ++i)
            for (int64_t j = 0; j < g.pool_w; ++j) {
              const int64_t ih = oh * g.stride_h - g.pad_top + i, iw = ow * g.stride_w - g.pad_left + j;
              if (ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w)
                inside.push_back(((n * g.in_h + ih) * g.in_w + iw) * g.channels + c);
            }
          f(((n * g.out_h() + oh) * g.out_w() + ow) * g.channels + c, inside);
        }
}

// Max pooling: y, and dx with each dy at the first maximum of its window (dy may be empty).
inline Doubles max_pool_reference(const PoolGeometry& g, std::span<const double> x, std::span<const double> dy = {},
                                  Doubles* dx = nullptr) {
  Doubles y(static_cast<size_t>(y_count(g)));
  if (dx) dx->assign(x.size(), 0.0);
  for_each_window(g, [&](int64_t yi, const std::vector<int64_t>& inside) {
    int64_t best = inside.front();
    for (int64_t xi : inside) best = x[xi] > x[best] ? xi : best;
    y[yi] = x[best];
    if (dx) (*dx)[best] += dy[yi];
  });
  return y;
}

// Average pooling over the inside positions: y, and dx with each dy shared among them.
inline Doubles avg_pool_reference(const PoolGeometry& g, std::span<const double> x, std::span<const double> dy = {},
                                  Doubles* dx = nullptr) {
  Doubles y(static_cast<size_t>(y_count(g)));
  if (dx) dx->assign(x.size(), 0.0);
  for_each_window(g, [&](int64_t yi, const std::vector<int64_t>& inside) {
    double sum = 0;
    for (int64_t xi : inside) sum += x[xi];
    y[yi] = sum / static_cast<double>(inside.size());
    if (dx)
      for (int64_t xi : inside) (*dx)[xi] += dy[yi] / static_cast<double>(inside.size());
  });
  return y;
}

}  // namespace mirror::testing
