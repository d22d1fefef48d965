// The host backend's ops against naive double-precision references written here, on several
// shapes (batch 1, odd sizes, strides, non-square kernels, overlapping pools). Every output is
// poisoned with NaN before the call, so an element the op forgot to write fails the comparison.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <thread>

#include <vector>

#include "mirror/engine/data/dataset.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "mirror/engine/random.hpp"
#include "op_test_util.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using namespace mirror::testing;

class HostOps : public HostBackendTest {
 protected:
  HostOps() : HostBackendTest(20240601) {}
};

const ConvGeometry kConvShapes[] = {
    // batch, in_h, in_w, in_c, out_c, kernel_h, kernel_w, stride_h, stride_w
    {1, 5, 5, 1, 1, 3, 3, 1, 1},   {2, 7, 6, 3, 5, 2, 3, 1, 1},   {3, 9, 8, 2, 4, 3, 2, 2, 2},
    {2, 11, 7, 5, 3, 1, 1, 2, 1},  {4, 13, 13, 16, 8, 5, 5, 2, 3}, {32, 28, 28, 1, 32, 3, 3, 1, 1},
};

TEST_F(HostOps, Conv2dMatchesReference) {
  for (const ConvGeometry& g : kConvShapes) {
    SCOPED_TRACE(::testing::Message() << "conv " << g.batch << "x" << g.in_h << "x" << g.in_w << "x" << g.in_c
                                      << " -> " << g.out_c << ", kernel " << g.kernel_h << "x" << g.kernel_w
                                      << ", stride " << g.stride_h << "x" << g.stride_w);
    const Floats x = random_floats(x_count(g), rng_), w = random_floats(g.weight_count(), rng_);
    const Floats b = random_floats(g.out_c, rng_), dy = random_floats(y_count(g), rng_);
    Doubles y_ref(y_count(g)), dw_ref(g.weight_count(), 0.0), db_ref(g.out_c, 0.0), dx_ref(x_count(g), 0.0);
    for (int64_t i = 0; i < y_count(g); ++i) y_ref[i] = b[i % g.out_c];
    for (int64_t i = 0; i < y_count(g); ++i) db_ref[i % g.out_c] += dy[i];
    for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) {
      y_ref[yi] += double{x[xi]} * w[wi];
      dw_ref[wi] += double{x[xi]} * dy[yi];
      dx_ref[xi] += double{w[wi]} * dy[yi];
    });
    const double taps = static_cast<double>(g.kernel_h * g.kernel_w * g.in_c);
    const double positions = static_cast<double>(g.batch * g.out_h() * g.out_w());
    for (int repeat = 0; repeat < 2; ++repeat) {  // the second run uses the cached primitives
      Floats y(y_count(g), kNaN), dw(g.weight_count(), kNaN), db(g.out_c, kNaN), dx(x_count(g), kNaN);
      backend_->conv2d_forward(g, x.data(), w.data(), b.data(), y.data());
      backend_->conv2d_backward_weights(g, x.data(), dy.data(), dw.data(), db.data());
      backend_->conv2d_backward_data(g, w.data(), dy.data(), dx.data());
      expect_close("conv y", y, y_ref, 1e-5 * std::sqrt(taps), 1e-5);
      expect_close("conv dw", dw, dw_ref, 1e-5 * std::sqrt(positions), 1e-5);
      expect_close("conv db", db, db_ref, 1e-5 * std::sqrt(positions), 1e-5);
      expect_close("conv dx", dx, dx_ref, 1e-5 * std::sqrt(taps), 1e-5);
    }
  }
}

TEST_F(HostOps, MaxPoolMatchesReference) {
  const PoolGeometry shapes[] = {
      // batch, in_h, in_w, channels, pool_h, pool_w, stride_h, stride_w
      {1, 4, 4, 1, 2, 2, 2, 2},  {2, 7, 5, 3, 2, 2, 2, 2},   {3, 9, 9, 5, 3, 3, 2, 2},
      {2, 6, 7, 70, 2, 3, 1, 2}, {1, 5, 6, 130, 3, 2, 1, 1}, {32, 26, 26, 32, 2, 2, 2, 2},
  };
  for (const PoolGeometry& g : shapes) {
    for (bool ties : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "pool " << g.batch << "x" << g.in_h << "x" << g.in_w << "x" << g.channels
                                        << ", window " << g.pool_h << "x" << g.pool_w << ", stride " << g.stride_h
                                        << "x" << g.stride_w << (ties ? ", with ties" : ""));
      Floats x = random_floats(g.batch * g.in_h * g.in_w * g.channels, rng_);
      if (ties)  // few distinct values, so windows hold several equal maxima
        for (float& v : x) v = std::round(v * 1.5f);
      const Floats dy = random_floats(g.batch * g.out_h() * g.out_w() * g.channels, rng_);
      Doubles dx_ref;
      const Doubles y_ref = max_pool_reference(g, to_doubles(x), to_doubles(dy), &dx_ref);
      Floats y(dy.size(), kNaN), dx(x.size(), kNaN);
      backend_->max_pool_forward(g, x.data(), y.data());
      backend_->max_pool_backward(g, x.data(), y.data(), dy.data(), dx.data());
      expect_close("pool y", y, y_ref, 0.0, 0.0);
      expect_close("pool dx", dx, dx_ref, 1e-6, 1e-6);
    }
  }
}

// Narrow layers (out = 10, a classifier's last layer) with `in` odd and rows from 1 to 256, products
// small and large enough for two threads, and wider outputs.
TEST_F(HostOps, DenseMatchesReference) {
  struct Sizes { int64_t rows, in, out; };
  const Sizes shapes[] = {
      {1, 1, 1},       {3, 7, 5},         {17, 33, 65},       {32, 5408, 10},    {1, 5403, 10},
      {3, 5403, 10},   {33, 5403, 10},    {64, 5003, 10},     {1, 262147, 10},   {3, 100003, 7},
      {256, 1029, 13}, {40, 6007, 16},    {32, 5403, 17},     {33, 20011, 1},
  };
  for (const Sizes s : shapes) {
    SCOPED_TRACE(::testing::Message() << "dense rows " << s.rows << ", in " << s.in << ", out " << s.out);
    const Floats x = random_floats(s.rows * s.in, rng_), w = random_floats(s.in * s.out, rng_);
    const Floats b = random_floats(s.out, rng_), dy = random_floats(s.rows * s.out, rng_);
    Doubles y_ref(s.rows * s.out), dx_ref(s.rows * s.in, 0.0), dw_ref(s.in * s.out, 0.0), db_ref(s.out, 0.0);
    for (int64_t r = 0; r < s.rows; ++r)
      for (int64_t j = 0; j < s.out; ++j) {
        double sum = b[j];
        for (int64_t k = 0; k < s.in; ++k) {
          sum += double{x[r * s.in + k]} * w[k * s.out + j];
          dx_ref[r * s.in + k] += double{dy[r * s.out + j]} * w[k * s.out + j];
          dw_ref[k * s.out + j] += double{x[r * s.in + k]} * dy[r * s.out + j];
        }
        y_ref[r * s.out + j] = sum;
        db_ref[j] += dy[r * s.out + j];
      }
    Floats y(y_ref.size(), kNaN), dx(dx_ref.size(), kNaN), dw(dw_ref.size(), kNaN), db(s.out, kNaN);
    backend_->dense_forward(s.rows, s.in, s.out, x.data(), w.data(), b.data(), y.data());
    backend_->dense_backward(s.rows, s.in, s.out, x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data());
    const double atol = 1e-5 * std::sqrt(static_cast<double>(std::max(s.in, s.rows)));
    expect_close("dense y", y, y_ref, atol, 1e-5);
    expect_close("dense dx", dx, dx_ref, atol, 1e-5);
    expect_close("dense dw", dw, dw_ref, atol, 1e-5);
    expect_close("dense db", db, db_ref, atol, 1e-5);
    Floats dw_again(dw_ref.size(), kNaN), db_again(s.out, kNaN);  // dx may be skipped (first layer)
    backend_->dense_backward(s.rows, s.in, s.out, x.data(), w.data(), dy.data(), nullptr, dw_again.data(),
                             db_again.data());
    expect_close("dense dw without dx", dw_again, dw_ref, atol, 1e-5);
    Floats y_unbiased(y_ref.size(), kNaN);  // use_bias=False
    backend_->dense_forward(s.rows, s.in, s.out, x.data(), w.data(), nullptr, y_unbiased.data());
    for (int64_t i = 0; i < s.rows * s.out; ++i) y_ref[i] -= b[i % s.out];
    expect_close("dense y without bias", y_unbiased, y_ref, atol, 1e-5);
  }
}

// A dense layer on two threads gives the same bits run after run, and on every replica with the same
// thread count (each replica has its own backend): replicas must stay bitwise identical.
TEST_F(HostOps, DenseIsDeterministicForAThreadCount) {
  struct Sizes { int64_t rows, in, out; };
  auto replica = make_host_backend(2);
  for (const Sizes s : {Sizes{64, 5003, 10}, Sizes{33, 5403, 10}, Sizes{1, 262147, 10}}) {
    SCOPED_TRACE(::testing::Message() << "dense rows " << s.rows << ", in " << s.in << ", out " << s.out);
    const Floats x = random_floats(s.rows * s.in, rng_), w = random_floats(s.in * s.out, rng_);
    const Floats b = random_floats(s.out, rng_), dy = random_floats(s.rows * s.out, rng_);
    const auto run = [&](Backend& be) {
      Floats y(s.rows * s.out), dx(s.rows * s.in), dw(s.in * s.out), db(s.out);
      be.dense_forward(s.rows, s.in, s.out, x.data(), w.data(), b.data(), y.data());
      be.dense_backward(s.rows, s.in, s.out, x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data());
      Floats all = y;
      for (const Floats* part : {&dx, &dw, &db}) all.insert(all.end(), part->begin(), part->end());
      return all;
    };
    const Floats first = run(*backend_), again = run(*backend_), other = run(*replica);
    EXPECT_EQ(std::memcmp(first.data(), again.data(), first.size() * sizeof(float)), 0) << "run twice";
    EXPECT_EQ(std::memcmp(first.data(), other.data(), first.size() * sizeof(float)), 0) << "two replicas";
  }
}

TEST_F(HostOps, ActivationsMatchReference) {
  const int64_t rows = 5, cols = 7;
  const Floats z = random_floats(rows * cols, rng_, -4.0f, 4.0f), dy = random_floats(rows * cols, rng_);
  Floats y(z.size(), kNaN);
  backend_->activation_forward(Activation::Linear, rows, cols, z.data(), y.data());
  EXPECT_EQ(y, z);
  Floats d(dy.size(), kNaN);
  backend_->activation_backward(Activation::Linear, rows, cols, nullptr, y.data(), dy.data(), d.data());
  EXPECT_EQ(d, dy);

  Doubles relu_ref(z.size()), relu_grad_ref(z.size());
  for (size_t i = 0; i < z.size(); ++i) {
    relu_ref[i] = z[i] > 0 ? z[i] : 0.0;
    relu_grad_ref[i] = z[i] > 0 ? dy[i] : 0.0;
  }
  d = dy;
  backend_->activation_forward(Activation::ReLU, rows, cols, y.data(), y.data());  // in place
  backend_->activation_backward(Activation::ReLU, rows, cols, nullptr, y.data(), d.data(), d.data());
  expect_close("relu y", y, relu_ref, 0.0, 0.0);
  expect_close("relu dz", d, relu_grad_ref, 0.0, 0.0);

  Doubles soft_ref(z.size()), soft_grad_ref(z.size());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0, dot = 0;
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(double{z[r * cols + j]});
    for (int64_t j = 0; j < cols; ++j) soft_ref[r * cols + j] = std::exp(double{z[r * cols + j]}) / sum;
    for (int64_t j = 0; j < cols; ++j) dot += soft_ref[r * cols + j] * dy[r * cols + j];
    for (int64_t j = 0; j < cols; ++j) soft_grad_ref[r * cols + j] = soft_ref[r * cols + j] * (dy[r * cols + j] - dot);
  }
  y.assign(z.size(), kNaN);
  d.assign(dy.size(), kNaN);
  backend_->activation_forward(Activation::Softmax, rows, cols, z.data(), y.data());
  backend_->activation_backward(Activation::Softmax, rows, cols, nullptr, y.data(), dy.data(), d.data());
  expect_close("softmax y", y, soft_ref, 1e-7, 1e-5);
  expect_close("softmax dz", d, soft_grad_ref, 1e-7, 1e-5);
}

TEST_F(HostOps, CrossEntropyAccumulatesLossAndAccuracy) {
  const int64_t rows = 4, classes = 3;
  // Row 2's label has probability 0 (clipped: loss -log(1e-7), no gradient); row 3 ties at the max.
  const Floats p = {0.7f, 0.2f, 0.1f, 0.1f, 0.3f, 0.6f, 0.0f, 0.5f, 0.5f, 0.4f, 0.4f, 0.2f};
  const std::vector<int32_t> labels = {0, 1, 0, 1};
  const float scale = 0.25f;
  const double loss_ref = -std::log(double{0.7f}) - std::log(double{0.3f}) - std::log(1e-7) - std::log(double{0.4f});
  const MetricSpec accuracy{.kind = MetricKind::SparseCategoricalAccuracy};
  for (bool logits : {false, true}) {
    Floats stats = {1.5f, 2.0f}, d(p.size(), kNaN);
    const LossSpec spec{.gradient_through_activation = logits};
    backend_->loss(spec, rows, classes, p.data(), labels.data(), scale, d.data(), stats.data());
    backend_->metric(accuracy, rows, classes, p.data(), labels.data(), stats.data() + 1);
    EXPECT_NEAR(stats[0], 1.5 + loss_ref, 1e-5 * loss_ref);
    EXPECT_EQ(stats[1], 2.0f + 1.0f);  // row 0 right; row 3's first maximum is class 0, not 1
    Doubles d_ref(p.size(), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < classes; ++j) {
        const bool hot = j == labels[r];
        if (logits) d_ref[r * classes + j] = scale * (p[r * classes + j] - (hot ? 1.0 : 0.0));
        else if (hot && r != 2) d_ref[r * classes + j] = -scale / p[r * classes + j];
      }
    expect_close(logits ? "dlogits" : "dprobs", d, d_ref, 1e-7, 1e-6);
  }
  Floats stats = {0.0f, 0.0f};
  backend_->loss({}, rows, classes, p.data(), labels.data(), scale, nullptr, stats.data());
  EXPECT_NEAR(stats[0], loss_ref, 1e-5 * loss_ref);
  const std::vector<int32_t> bad_labels = {0, 3, 0, 1};
  EXPECT_THROW(backend_->loss({}, rows, classes, p.data(), bad_labels.data(), scale, nullptr, stats.data()), DataError);
}

TEST_F(HostOps, GatherBatchScalesPixels) {
  ImageSet images;
  images.count = 6, images.height = 3, images.width = 2, images.channels = 2;
  for (int64_t i = 0; i < images.count * images.sample_size(); ++i) images.pixels.push_back(uint8_t(i * 37 % 256));
  for (int64_t i = 0; i < images.count; ++i) images.labels.push_back(int32_t(9 - i));
  const auto resident = backend_->make_resident(images);
  const std::vector<int32_t> indices = {4, 0, 5, 4};
  Floats x(indices.size() * images.sample_size(), kNaN);
  std::vector<int32_t> labels(indices.size(), -1);
  backend_->gather_batch(*resident, indices, x.data(), labels.data());
  Doubles x_ref;
  for (int32_t index : indices)
    for (int64_t k = 0; k < images.sample_size(); ++k)
      x_ref.push_back(images.pixels[index * images.sample_size() + k] / 255.0);
  expect_close("gathered x", x, x_ref, 0.0, 1e-7);
  EXPECT_EQ(labels, (std::vector<int32_t>{5, 9, 4, 5}));
  const std::vector<int32_t> out_of_range = {6};
  EXPECT_THROW(backend_->gather_batch(*resident, out_of_range, x.data(), labels.data()), InvalidArgument);
}

TEST_F(HostOps, ZeroRowsDoNothing) {
  Floats buffer(64, kNaN), stats = {3.0f, 4.0f};
  const Floats before = buffer;
  float* p = buffer.data();
  const int32_t labels[1] = {0};
  backend_->dense_forward(0, 4, 4, p, p, p, p);
  backend_->dense_backward(0, 4, 4, p, p, p, p, p, p);
  backend_->activation_forward(Activation::Softmax, 0, 4, p, p);
  backend_->activation_backward(Activation::Softmax, 0, 4, p, p, p, p);
  backend_->activation_forward(Activation::ReLU, 0, 4, p, p);
  backend_->activation_forward(Activation::GELU, 0, 4, p, p);
  backend_->activation_backward(Activation::SiLU, 0, 4, p, p, p, p);
  backend_->loss({.gradient_through_activation = true}, 0, 4, p, labels, 1.0f, p, stats.data());
  backend_->metric({}, 0, 4, p, labels, stats.data());
  backend_->conv2d_forward({0, 5, 5, 1, 2, 3, 3, 1, 1}, p, p, p, p);
  backend_->conv2d_forward({0, 5, 5, 1, 2, 3, 3, 2, 2, 1, 1, 1, 1}, p, p, nullptr, p);
  backend_->max_pool_forward({0, 4, 4, 1, 2, 2, 2, 2}, p, p);
  backend_->avg_pool_forward({0, 4, 4, 1, 2, 2, 2, 2}, p, p);
  backend_->avg_pool_backward({0, 4, 4, 1, 2, 2, 2, 2}, p, p);
  backend_->global_avg_pool_forward(0, 16, 4, p, p);
  backend_->global_avg_pool_backward(0, 16, 4, p, p);
  backend_->batch_norm_forward(0, 4, p, p, p, p, p, p);
  backend_->batch_norm_backward_data(0, 4, p, p, p, p, p, p, 1.0, p);
  backend_->dropout_forward({}, 0, 4, p, p);
  backend_->dropout_backward({}, 0, 4, p, p);
  backend_->add(0, p, p, p);
  backend_->copy_columns(0, 4, p, 4, p, 4, true);
  EXPECT_EQ(std::memcmp(buffer.data(), before.data(), buffer.size() * sizeof(float)), 0);
  EXPECT_EQ(stats, (Floats{3.0f, 4.0f}));
}

TEST_F(HostOps, AdamOneStepMatchesKeras) {
  const size_t count = 100000;  // large enough for the parallel path
  const OptimizerStep step{.alpha = 0.01f * std::sqrt(1 - 0.999f * 0.999f) / (1 - 0.9f * 0.9f)};  // lr 0.01, t = 2
  const Floats p0 = random_floats(count, rng_), g = random_floats(count, rng_);
  const Floats m0 = random_floats(count, rng_, -0.1f, 0.1f), v0 = random_floats(count, rng_, 0.001f, 0.01f);
  Floats p = p0, slots = m0;
  slots.insert(slots.end(), v0.begin(), v0.end());
  const Floats stats = {0.5f, 0.0f};
  backend_->optimizer_update(count, step, {}, stats.data(), p.data(), g.data(), slots.data());
  const Floats m(slots.begin(), slots.begin() + count), v(slots.begin() + count, slots.end());
  Doubles p_ref(count), m_ref(count), v_ref(count);
  // Keras 3 holds beta1, beta2 and epsilon as float32, so the reference uses those values.
  const double b1 = 0.9f, b2 = 0.999f, eps = 1e-7f;
  for (size_t i = 0; i < count; ++i) {  // m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2)
    m_ref[i] = b1 * m0[i] + (1 - b1) * g[i];
    v_ref[i] = b2 * v0[i] + (1 - b2) * g[i] * g[i];
    p_ref[i] = p0[i] - double{step.alpha} * m_ref[i] / (std::sqrt(v_ref[i]) + eps);
  }
  expect_close("adam m", m, m_ref, 1e-7, 1e-5);
  expect_close("adam v", v, v_ref, 1e-9, 1e-5);
  expect_close("adam p", p, p_ref, 1e-6, 1e-6);

  const Floats nan_stats = {kNaN, 1.0f}, inf_stats = {INFINITY, 1.0f};
  const Floats p1 = p, slots1 = slots;
  backend_->optimizer_update(count, step, {}, nan_stats.data(), p.data(), g.data(), slots.data());
  backend_->optimizer_update(count, step, {}, inf_stats.data(), p.data(), g.data(), slots.data());
  EXPECT_TRUE(p == p1 && slots == slots1) << "a non-finite loss must leave weights and slots untouched";
}

TEST_F(HostOps, SgdOneStepMatchesKeras) {
  const size_t count = 1000;
  const Floats p0 = random_floats(count, rng_), g = random_floats(count, rng_), mom0 = random_floats(count, rng_);
  const Floats stats = {0.5f, 0.0f};
  Floats p = p0;
  backend_->optimizer_update(count, {.rule = OptimizerRule::SGD, .learning_rate = 0.1f}, {}, stats.data(), p.data(),
                             g.data(), nullptr);
  Doubles p_ref(count), mom_ref(count);
  for (size_t i = 0; i < count; ++i) p_ref[i] = p0[i] - 0.1 * double{g[i]};
  expect_close("sgd p", p, p_ref, 1e-7, 1e-6);

  Floats q = p0, mom = mom0;  // Keras 3: m = momentum m - lr g; p += m
  backend_->optimizer_update(count, {.rule = OptimizerRule::SGD, .learning_rate = 0.1f, .momentum = 0.9f}, {},
                             stats.data(), q.data(), g.data(), mom.data());
  for (size_t i = 0; i < count; ++i) {
    mom_ref[i] = 0.9 * mom0[i] - 0.1 * double{g[i]};
    p_ref[i] = p0[i] + mom_ref[i];
  }
  expect_close("sgd momentum", mom, mom_ref, 1e-7, 1e-6);
  expect_close("sgd p with momentum", q, p_ref, 1e-7, 1e-6);

  const Floats nan_stats = {kNaN, 0.0f}, q1 = q, mom1 = mom;
  backend_->optimizer_update(count, {.rule = OptimizerRule::SGD, .learning_rate = 0.1f, .momentum = 0.9f}, {},
                             nan_stats.data(), q.data(), g.data(), mom.data());
  EXPECT_TRUE(q == q1 && mom == mom1) << "a NaN loss must leave weights and momentum untouched";
}

TEST_F(HostOps, MemoryOps) {
  EXPECT_EQ(backend_->device().kind, DeviceKind::CPU);
  EXPECT_THROW(make_host_backend(0), InvalidArgument);
  DeviceBuffer a = backend_->allocate(1000 * sizeof(float)), b = backend_->allocate(1000 * sizeof(float));
  ASSERT_NE(a.data(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
  EXPECT_EQ(a.count(), 1000u);
  const Floats src = random_floats(1000, rng_);
  Floats back(1000, kNaN);
  backend_->upload(src.data(), a.data(), a.num_bytes());
  backend_->copy(a.as(), b.as(), 1000);
  backend_->download(b.data(), back.data(), b.num_bytes());
  EXPECT_EQ(back, src);
  backend_->fill(b.as(), 999, 2.5f);
  backend_->synchronize();
  backend_->download(b.data(), back.data(), b.num_bytes());
  EXPECT_EQ(back[0], 2.5f);
  EXPECT_EQ(back[998], 2.5f);
  EXPECT_EQ(back[999], src[999]);
}

// Each replica's worker thread gets its own share of the cores: the OpenMP thread count is set for
// the calling thread only, and ops (oneDNN's included) still run correctly there.
TEST(HostBackend, BindSetsThreadCountOfCallingThreadOnly) {
  const int before = omp_get_max_threads();
  int inside = 0;
  Floats y(4, kNaN);
  std::thread worker([&] {
    auto backend = make_host_backend(1);
    backend->bind_current_thread();
    inside = omp_get_max_threads();
    const Floats x(9, 1.0f), w(9, 0.5f), b(1, 0.25f);
    backend->conv2d_forward({1, 3, 3, 1, 1, 2, 2, 1, 1}, x.data(), w.data(), b.data(), y.data());
  });
  worker.join();
  EXPECT_EQ(inside, 1);
  EXPECT_EQ(omp_get_max_threads(), before);
  EXPECT_EQ(y, Floats(4, 2.25f));
}

}  // namespace
}  // namespace mirror

namespace mirror {
namespace {

TEST(HostTotals, AccumulateStatsStopsAtTheFirstNonFiniteLoss) {
  auto backend = make_host_backend(1);
  float totals[3] = {0.0f, 0.0f, -1.0f};
  const float good[2] = {2.5f, 3.0f}, bad[2] = {NAN, 1.0f};
  backend->accumulate_stats(2, good, totals, 0);
  backend->accumulate_stats(2, good, totals, 1);
  EXPECT_EQ(totals[0], 5.0f);
  EXPECT_EQ(totals[1], 6.0f);
  EXPECT_EQ(totals[2], -1.0f);
  backend->accumulate_stats(2, bad, totals, 2);
  backend->accumulate_stats(2, good, totals, 3);  // ignored: the epoch already failed
  EXPECT_TRUE(std::isnan(totals[0]));
  EXPECT_EQ(totals[2], 2.0f);
  // Given the totals, an optimizer skips every step from the bad one on.
  float param = 1.0f, grad = 1.0f, slots[2] = {0.0f, 0.0f};
  backend->optimizer_update(1, {.alpha = 0.1f}, {}, totals, &param, &grad, slots);
  EXPECT_EQ(param, 1.0f);
}

TEST(HostTotals, AccumulateStatsTakesAnyWidth) {
  auto backend = make_host_backend(1);
  // Four stats (a loss and three metrics): the bad-step marker sits right after them.
  float totals[5] = {0.0f, 0.0f, 0.0f, 0.0f, -1.0f};
  const float good[4] = {1.0f, 2.0f, 3.0f, 4.0f}, bad[4] = {INFINITY, 1.0f, 1.0f, 1.0f};
  backend->accumulate_stats(4, good, totals, 0);
  backend->accumulate_stats(4, good, totals, 1);
  EXPECT_EQ((std::vector<float>(totals, totals + 5)), (std::vector<float>{2.0f, 4.0f, 6.0f, 8.0f, -1.0f}));
  backend->accumulate_stats(4, bad, totals, 7);
  backend->accumulate_stats(4, good, totals, 8);
  EXPECT_EQ((std::vector<float>(totals, totals + 5)), (std::vector<float>{INFINITY, 4.0f, 6.0f, 8.0f, 7.0f}));
}

}  // namespace
}  // namespace mirror

namespace mirror {
namespace {

std::vector<float> random_values(size_t count, uint64_t stream, float low = -1.0f, float high = 1.0f) {
  std::vector<float> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = low + (high - low) * random::uniform(99, stream, i);
  return v;
}

// The fused ops must equal their unfused definitions (Backend's default implementations).
TEST(HostFusedOps, ConvReluEqualsConvThenRelu) {
  auto backend = make_host_backend(2);
  for (const ConvGeometry& g : {ConvGeometry{32, 28, 28, 1, 32, 3, 3, 1, 1}, ConvGeometry{3, 9, 7, 5, 6, 2, 3, 2, 1}}) {
    const auto x = random_values(size_t(g.batch * g.in_h * g.in_w * g.in_c), 1);
    const auto w = random_values(size_t(g.weight_count()), 2);
    const auto b = random_values(size_t(g.out_c), 3);
    const size_t out = size_t(g.batch * g.out_h() * g.out_w() * g.out_c);
    std::vector<float> fused(out, NAN), plain(out, NAN);
    backend->conv2d_relu_forward(g, x.data(), w.data(), b.data(), fused.data());
    backend->Backend::conv2d_relu_forward(g, x.data(), w.data(), b.data(), plain.data());
    EXPECT_TRUE(testing::all_close(fused, plain, 1e-6, 1e-6));
    EXPECT_EQ(*std::min_element(fused.begin(), fused.end()), 0.0f);
  }
}

TEST(HostFusedOps, MaxPoolReluBackwardEqualsUnpoolThenReluMask) {
  auto backend = make_host_backend(2);
  for (const PoolGeometry& g : {PoolGeometry{32, 26, 26, 32, 2, 2, 2, 2}, PoolGeometry{2, 7, 9, 3, 2, 2, 2, 2},
                               PoolGeometry{2, 7, 7, 3, 3, 3, 2, 2}}) {
    // A ReLU's output: about half zeros, so windows whose maximum is 0 occur.
    auto x = random_values(size_t(g.batch * g.in_h * g.in_w * g.channels), 4, -1.0f, 1.0f);
    for (float& v : x) v = v > 0 ? v : 0.0f;
    const size_t out = size_t(g.batch * g.out_h() * g.out_w() * g.channels);
    std::vector<float> y(out), fused(x.size(), NAN), plain(x.size(), NAN);
    backend->max_pool_forward(g, x.data(), y.data());
    const auto dy = random_values(out, 5);
    backend->max_pool_relu_backward(g, x.data(), y.data(), dy.data(), fused.data());
    backend->Backend::max_pool_relu_backward(g, x.data(), y.data(), dy.data(), plain.data());
    EXPECT_EQ(fused, plain);
  }
}

}  // namespace
}  // namespace mirror
