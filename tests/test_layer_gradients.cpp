// Gradient checks of the new layers' backward ops against central finite differences of naive
// double-precision forwards written here (as in test_gradients.cpp, which also checks max pooling
// with padding): padded and strided convolution without bias, average pooling with padding,
// global average pooling, each element-wise activation, batch normalization in training (through
// the batch's own moments), dropout with its mask fixed, and column copies (concatenation). The
// scalar is L = sum(r * y).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>

#include "mirror/engine/host/host_backend.hpp"
#include "mirror/engine/random.hpp"
#include "op_test_util.hpp"

namespace mirror {
namespace {

using namespace mirror::testing;

class LayerGradients : public HostBackendTest {
 protected:
  LayerGradients() : HostBackendTest(31) {}
};

TEST_F(LayerGradients, PaddedStridedConvolutionWithoutBias) {
  for (const ConvGeometry& g : {same_padded(ConvGeometry{2, 6, 6, 2, 3, 3, 3, 2, 2}),
                                same_padded(ConvGeometry{1, 7, 5, 3, 2, 3, 3, 2, 2}),
                                ConvGeometry{2, 5, 6, 2, 3, 3, 2, 2, 1, 0, 1, 2, 0}}) {
    SCOPED_TRACE(::testing::Message() << "conv " << g.in_h << "x" << g.in_w << ", pad t/l/b/r " << g.pad_top << "/"
                                      << g.pad_left << "/" << g.pad_bottom << "/" << g.pad_right);
    const Floats x = random_floats(x_count(g), rng_), w = random_floats(g.weight_count(), rng_);
    const Floats r = random_floats(y_count(g), rng_);
    Floats dx(x.size(), kNaN), dw(w.size(), kNaN);
    backend_->conv2d_backward_data(g, w.data(), r.data(), dx.data());
    backend_->conv2d_backward_weights(g, x.data(), r.data(), dw.data(), nullptr);
    const Doubles xd = to_doubles(x), wd = to_doubles(w), rd = to_doubles(r);
    const Loss of_x = [&](const Doubles& v) { return dot(rd, conv_reference(g, v, wd, {})); };
    const Loss of_w = [&](const Doubles& v) { return dot(rd, conv_reference(g, xd, v, {})); };
    expect_gradient("conv dx", dx, finite_difference(of_x, xd, 1e-3));
    expect_gradient("conv dw", dw, finite_difference(of_w, wd, 1e-3));
  }
}

const PoolGeometry kPaddedPools[] = {same_padded(PoolGeometry{2, 7, 7, 3, 3, 3, 2, 2}),
                                     same_padded(PoolGeometry{1, 6, 5, 2, 2, 2, 2, 2}),
                                     PoolGeometry{2, 5, 7, 2, 3, 2, 2, 3, 1, 1, 2, 1}};

TEST_F(LayerGradients, AveragePool) {
  for (const PoolGeometry& g : kPaddedPools) {
    const Floats x = random_floats(x_count(g), rng_), r = random_floats(y_count(g), rng_);
    Floats dx(x.size(), kNaN);
    backend_->avg_pool_backward(g, r.data(), dx.data());
    const Doubles rd = to_doubles(r);
    const Loss loss = [&](const Doubles& v) { return dot(rd, avg_pool_reference(g, v)); };
    expect_gradient("avg pool dx", dx, finite_difference(loss, to_doubles(x), 1e-3));
  }
}

TEST_F(LayerGradients, GlobalAveragePool) {
  const int64_t batch = 3, pixels = 10, channels = 5;
  const Floats x = random_floats(batch * pixels * channels, rng_), r = random_floats(batch * channels, rng_);
  Floats dx(x.size(), kNaN);
  backend_->global_avg_pool_backward(batch, pixels, channels, r.data(), dx.data());
  const Doubles rd = to_doubles(r);
  const Loss loss = [&](const Doubles& v) {
    double sum = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const auto n = static_cast<int64_t>(i) / (pixels * channels), c = static_cast<int64_t>(i) % channels;
      sum += rd[n * channels + c] * v[i] / pixels;
    }
    return sum;
  };
  expect_gradient("gap dx", dx, finite_difference(loss, to_doubles(x), 1e-3));
}

double activation_double(Activation a, double x) {
  switch (a) {
    case Activation::ReLU: return std::max(x, 0.0);
    case Activation::Sigmoid: return 1 / (1 + std::exp(-x));
    case Activation::Tanh: return std::tanh(x);
    case Activation::GELU: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Activation::SiLU: return x / (1 + std::exp(-x));
    default: return x;
  }
}

TEST_F(LayerGradients, EachActivation) {
  for (Activation a : {Activation::Linear, Activation::ReLU, Activation::Sigmoid, Activation::Tanh, Activation::GELU,
                       Activation::SiLU}) {
    SCOPED_TRACE(to_string(a));
    Floats x = random_floats(60, rng_, -4.0f, 4.0f);
    for (float& v : x) v += v > 0 ? 0.05f : -0.05f;  // away from ReLU's kink
    const Floats r = random_floats(x.size(), rng_);
    Floats y(x.size(), kNaN), dx(x.size(), kNaN);
    backend_->activation_forward(a, 6, 10, x.data(), y.data());
    backend_->activation_backward(a, 6, 10, x.data(), y.data(), r.data(), dx.data());
    const Doubles rd = to_doubles(r);
    const Loss loss = [&](const Doubles& v) {
      double sum = 0;
      for (size_t i = 0; i < v.size(); ++i) sum += rd[i] * activation_double(a, v[i]);
      return sum;
    };
    expect_gradient("activation dx", dx, finite_difference(loss, to_doubles(x), 1e-5));
  }
}

// Training-mode batch normalization as a function of x, gamma and beta: the moments are the
// batch's own, so dx carries the terms through the mean and the variance.
Doubles batch_norm_reference(int64_t rows, int64_t channels, const Doubles& x, const Doubles& gamma,
                             const Doubles& beta, double epsilon) {
  Doubles mean(channels, 0.0), var(channels, 0.0), y(x.size());
  for (size_t i = 0; i < x.size(); ++i) mean[i % channels] += x[i] / rows;
  for (size_t i = 0; i < x.size(); ++i) var[i % channels] += std::pow(x[i] - mean[i % channels], 2) / rows;
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t c = i % channels;
    y[i] = gamma[c] * (x[i] - mean[c]) / std::sqrt(var[c] + epsilon) + beta[c];
  }
  return y;
}

TEST_F(LayerGradients, BatchNormTraining) {
  const int64_t rows = 12, channels = 3;
  const float epsilon = 1e-3f;
  const Floats x = random_floats(rows * channels, rng_, -2.0f, 3.0f), r = random_floats(x.size(), rng_);
  const Floats gamma = random_floats(channels, rng_, 0.5f, 1.5f), beta = random_floats(channels, rng_);
  const Floats shift = {0.3f, -0.2f, 1.0f};
  // Forward from the ops, as a layer composes them; backward from the two backward ops.
  const BatchNormStep step = batch_norm_step(*backend_, rows, channels, x, shift, gamma, beta, r, epsilon);
  const Floats &y = step.y, &dsums = step.dsums, &dx = step.dx;
  const Doubles xd = to_doubles(x), gd = to_doubles(gamma), bd = to_doubles(beta), rd = to_doubles(r);
  expect_close("composed forward", y, batch_norm_reference(rows, channels, xd, gd, bd, epsilon), 1e-5, 1e-5);
  const Floats dbeta(dsums.begin(), dsums.begin() + channels), dgamma(dsums.begin() + channels, dsums.end());
  const Loss of_x = [&](const Doubles& v) { return dot(rd, batch_norm_reference(rows, channels, v, gd, bd, epsilon)); };
  const Loss of_gamma = [&](const Doubles& v) {
    return dot(rd, batch_norm_reference(rows, channels, xd, v, bd, epsilon));
  };
  const Loss of_beta = [&](const Doubles& v) {
    return dot(rd, batch_norm_reference(rows, channels, xd, gd, v, epsilon));
  };
  expect_gradient("batch norm dx", dx, finite_difference(of_x, xd, 1e-4));
  expect_gradient("batch norm dgamma", dgamma, finite_difference(of_gamma, gd, 1e-4));
  expect_gradient("batch norm dbeta", dbeta, finite_difference(of_beta, bd, 1e-4));
}

TEST_F(LayerGradients, DropoutWithAFixedMask) {
  const int64_t rows = 7, cols = 9;
  const DropoutSpec spec{.rate = 0.4f, .seed = 11, .stream = 2, .first_row = 3};
  const Floats x = random_floats(rows * cols, rng_), r = random_floats(x.size(), rng_);
  Floats dx(x.size(), kNaN);
  backend_->dropout_backward(spec, rows, cols, r.data(), dx.data());
  const Doubles rd = to_doubles(r);
  const Loss loss = [&](const Doubles& v) {
    double sum = 0;
    for (int64_t i = 0; i < rows * cols; ++i) {
      const auto index = static_cast<uint64_t>(spec.first_row * cols + i);
      if (random::uniform(spec.seed, spec.stream, index) >= spec.rate) sum += rd[i] * v[i] / (1 - double{spec.rate});
    }
    return sum;
  };
  expect_gradient("dropout dx", dx, finite_difference(loss, to_doubles(x), 1e-3));
}

TEST_F(LayerGradients, ColumnCopiesOfAConcatenation) {
  // y = concat(a, b) along the last axis: (rows, 2) and (rows, 3) into (rows, 5). The gradient of
  // each input is its columns of dy, copied back out (accumulated onto zeros for b).
  const int64_t rows = 4;
  const Floats a = random_floats(rows * 2, rng_), b = random_floats(rows * 3, rng_), r = random_floats(rows * 5, rng_);
  Floats da(a.size(), kNaN), db(b.size(), 0.0f);
  backend_->copy_columns(rows, 2, r.data(), 5, da.data(), 2, false);
  backend_->copy_columns(rows, 3, r.data() + 2, 5, db.data(), 3, true);
  const Doubles ad = to_doubles(a), bd = to_doubles(b), rd = to_doubles(r);
  const auto loss = [&](const Doubles& av, const Doubles& bv) {
    double sum = 0;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = 0; c < 5; ++c) sum += rd[i * 5 + c] * (c < 2 ? av[i * 2 + c] : bv[i * 3 + c - 2]);
    return sum;
  };
  expect_gradient("concat da", da, finite_difference([&](const Doubles& v) { return loss(v, bd); }, ad, 1e-3));
  expect_gradient("concat db", db, finite_difference([&](const Doubles& v) { return loss(ad, v); }, bd, 1e-3));
}

}  // namespace
}  // namespace mirror
