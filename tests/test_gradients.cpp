// Gradient checks: each backward op of the host backend against central finite differences of a
// naive double-precision forward written here, so the numeric gradient is accurate to ~1e-9 and
// any mismatch is the backend's. The scalar is L = sum(r * y) with random r, except for the
// cross-entropy, whose scalar is the (scaled) loss itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "mirror/engine/host/host_backend.hpp"
#include "op_test_util.hpp"

namespace mirror {
namespace {

using namespace mirror::testing;

Doubles softmax_reference(const Doubles& z, int64_t rows, int64_t cols) {
  Doubles y(z.size());
  for (int64_t r = 0; r < rows; ++r) {
    const double top = *std::max_element(z.begin() + r * cols, z.begin() + (r + 1) * cols);
    double sum = 0;
    for (int64_t j = 0; j < cols; ++j) sum += y[r * cols + j] = std::exp(z[r * cols + j] - top);
    for (int64_t j = 0; j < cols; ++j) y[r * cols + j] /= sum;
  }
  return y;
}

// scale * sum over rows of -log(clip(p[label])), with Keras's clipping to [1e-7, 1 - 1e-7].
double cross_entropy_reference(const Doubles& p, const std::vector<int32_t>& labels, int64_t classes, double scale) {
  double loss = 0;
  for (size_t r = 0; r < labels.size(); ++r)
    loss -= std::log(std::clamp(p[r * classes + labels[r]], 1e-7, 1 - 1e-7));
  return scale * loss;
}

class Gradients : public HostBackendTest {
 protected:
  Gradients() : HostBackendTest(7) {}
};

TEST_F(Gradients, Conv2d) {
  const ConvGeometry shapes[] = {
      {2, 6, 5, 2, 3, 3, 2, 1, 1}, {1, 9, 8, 3, 2, 3, 2, 2, 2}, {3, 7, 7, 1, 4, 3, 3, 2, 2}};
  for (const ConvGeometry& g : shapes) {
    SCOPED_TRACE(::testing::Message() << "conv " << g.in_h << "x" << g.in_w << "x" << g.in_c << " -> " << g.out_c
                                      << ", stride " << g.stride_h << "x" << g.stride_w);
    const Floats x = random_floats(g.batch * g.in_h * g.in_w * g.in_c, rng_);
    const Floats w = random_floats(g.weight_count(), rng_), b = random_floats(g.out_c, rng_);
    const Floats r = random_floats(g.batch * g.out_h() * g.out_w() * g.out_c, rng_);
    Floats dx(x.size(), kNaN), dw(w.size(), kNaN), db(b.size(), kNaN);
    backend_->conv2d_backward_data(g, w.data(), r.data(), dx.data());
    backend_->conv2d_backward_weights(g, x.data(), r.data(), dw.data(), db.data());
    const Doubles xd = to_doubles(x), wd = to_doubles(w), bd = to_doubles(b), rd = to_doubles(r);
    // L is linear in each argument, so any step gives the exact derivative up to rounding.
    const Loss of_x = [&](const Doubles& v) { return dot(rd, conv_reference(g, v, wd, bd)); };
    const Loss of_w = [&](const Doubles& v) { return dot(rd, conv_reference(g, xd, v, bd)); };
    const Loss of_b = [&](const Doubles& v) { return dot(rd, conv_reference(g, xd, wd, v)); };
    expect_gradient("conv dx", dx, finite_difference(of_x, xd, 1e-3));
    expect_gradient("conv dw", dw, finite_difference(of_w, wd, 1e-3));
    expect_gradient("conv db", db, finite_difference(of_b, bd, 1e-3));
  }
}

TEST_F(Gradients, MaxPool) {
  // The last three are padded (Keras's "same", and an explicit asymmetric padding).
  const PoolGeometry shapes[] = {{2, 5, 7, 3, 2, 2, 2, 2},
                                 {1, 6, 5, 4, 3, 3, 1, 2},
                                 {2, 7, 7, 2, 3, 2, 2, 1},
                                 same_padded(PoolGeometry{2, 7, 7, 3, 3, 3, 2, 2}),
                                 same_padded(PoolGeometry{1, 6, 5, 2, 2, 2, 2, 2}),
                                 {2, 5, 7, 2, 3, 2, 2, 3, 1, 1, 2, 1}};
  for (const PoolGeometry& g : shapes) {
    SCOPED_TRACE(::testing::Message() << "pool " << g.in_h << "x" << g.in_w << ", window " << g.pool_h << "x"
                                      << g.pool_w << ", stride " << g.stride_h << "x" << g.stride_w);
    const Floats x = random_floats(g.batch * g.in_h * g.in_w * g.channels, rng_);
    const Floats r = random_floats(g.batch * g.out_h() * g.out_w() * g.channels, rng_);
    Floats y(r.size(), kNaN), dx(x.size(), kNaN);
    backend_->max_pool_forward(g, x.data(), y.data());
    backend_->max_pool_backward(g, x.data(), y.data(), r.data(), dx.data());
    // Tiny steps, so no window's maximum changes hands between the two evaluations.
    const Doubles rd = to_doubles(r);
    const Loss loss = [&](const Doubles& v) { return dot(rd, max_pool_reference(g, v)); };
    expect_gradient("pool dx", dx, finite_difference(loss, to_doubles(x), 1e-7));
  }
}

TEST_F(Gradients, Dense) {
  const int64_t rows = 3, in = 7, out = 4;
  const Floats x = random_floats(rows * in, rng_), w = random_floats(in * out, rng_), b = random_floats(out, rng_);
  const Floats r = random_floats(rows * out, rng_);
  Floats dx(x.size(), kNaN), dw(w.size(), kNaN), db(b.size(), kNaN);
  backend_->dense_backward(rows, in, out, x.data(), w.data(), r.data(), dx.data(), dw.data(), db.data());
  const Doubles xd = to_doubles(x), wd = to_doubles(w), bd = to_doubles(b), rd = to_doubles(r);
  const auto loss = [&](const Doubles& xv, const Doubles& wv, const Doubles& bv) {
    double sum = 0;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < out; ++j) {
        double y = bv[j];
        for (int64_t k = 0; k < in; ++k) y += xv[i * in + k] * wv[k * out + j];
        sum += rd[i * out + j] * y;
      }
    return sum;
  };
  expect_gradient("dense dx", dx, finite_difference([&](const Doubles& v) { return loss(v, wd, bd); }, xd, 1e-3));
  expect_gradient("dense dw", dw, finite_difference([&](const Doubles& v) { return loss(xd, v, bd); }, wd, 1e-3));
  expect_gradient("dense db", db, finite_difference([&](const Doubles& v) { return loss(xd, wd, v); }, bd, 1e-3));
}

TEST_F(Gradients, Relu) {
  Floats z = random_floats(40, rng_);
  for (float& v : z) v += v > 0 ? 0.05f : -0.05f;  // away from the kink at 0
  const Floats r = random_floats(z.size(), rng_);
  Floats y = z, dz = r;
  backend_->activation_forward(Activation::ReLU, 5, 8, y.data(), y.data());
  backend_->activation_backward(Activation::ReLU, 5, 8, nullptr, y.data(), dz.data(), dz.data());
  const Doubles rd = to_doubles(r);
  const Loss loss = [&](const Doubles& v) {
    double sum = 0;
    for (size_t i = 0; i < v.size(); ++i) sum += rd[i] * std::max(v[i], 0.0);
    return sum;
  };
  expect_gradient("relu dz", dz, finite_difference(loss, to_doubles(z), 1e-4));
}

TEST_F(Gradients, SoftmaxBackward) {
  const int64_t rows = 4, cols = 6;
  const Floats z = random_floats(rows * cols, rng_, -3.0f, 3.0f), r = random_floats(z.size(), rng_);
  Floats y = z, dz = r;
  backend_->activation_forward(Activation::Softmax, rows, cols, y.data(), y.data());
  backend_->activation_backward(Activation::Softmax, rows, cols, nullptr, y.data(), dz.data(), dz.data());
  const Doubles rd = to_doubles(r);
  const Loss loss = [&](const Doubles& v) { return dot(rd, softmax_reference(v, rows, cols)); };
  expect_gradient("softmax dz", dz, finite_difference(loss, to_doubles(z), 1e-5));
}

TEST_F(Gradients, CrossEntropyWithRespectToProbabilities) {
  const int64_t rows = 5, classes = 4;
  const float scale = 0.37f;
  const Floats p = random_floats(rows * classes, rng_, 0.05f, 0.95f);
  const std::vector<int32_t> labels = {0, 3, 1, 1, 2};
  Floats d(p.size(), kNaN), stats = {0.0f, 0.0f};
  backend_->loss({}, rows, classes, p.data(), labels.data(), scale, d.data(), stats.data());
  const Loss loss = [&](const Doubles& v) { return cross_entropy_reference(v, labels, classes, scale); };
  expect_gradient("dloss/dprobs", d, finite_difference(loss, to_doubles(p), 1e-6));
}

TEST_F(Gradients, CrossEntropyThroughSoftmax) {
  const int64_t rows = 5, classes = 4;
  const float scale = 0.37f;
  const Floats z = random_floats(rows * classes, rng_, -3.0f, 3.0f);
  const std::vector<int32_t> labels = {2, 0, 3, 1, 1};
  Floats p = z, d(z.size(), kNaN), stats = {0.0f, 0.0f};
  backend_->activation_forward(Activation::Softmax, rows, classes, p.data(), p.data());
  backend_->loss({.gradient_through_activation = true}, rows, classes, p.data(), labels.data(), scale, d.data(),
                 stats.data());
  const Loss loss = [&](const Doubles& v) {
    return cross_entropy_reference(softmax_reference(v, rows, classes), labels, classes, scale);
  };
  expect_gradient("dloss/dlogits", d, finite_difference(loss, to_doubles(z), 1e-5));
}

}  // namespace
}  // namespace mirror
