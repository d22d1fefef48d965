// The host backend's batch normalization and dropout against double-precision references written
// from engine/backend.hpp's contract, and against Keras 3's values computed by NumPy
// (tests/reference/keras_semantics.inc): the sums, moments, forward and backward ops, the moving
// statistics, results that do not depend on the thread count, and a dropout mask that depends on
// the global row of a sample, not on how the batch was split.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>

#include "mirror/engine/error.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "mirror/engine/random.hpp"
#include "op_test_util.hpp"
#include "reference/keras_semantics.inc"

namespace mirror {
namespace {

using namespace mirror::testing;

class HostNormOps : public HostBackendTest {
 protected:
  HostNormOps() : HostBackendTest(1129) {}
};

// Per-channel mean and biased variance of x (rows, channels), in double.
void moments_reference(int64_t rows, int64_t channels, const Floats& x, Doubles& mean, Doubles& var) {
  mean.assign(channels, 0.0);
  var.assign(channels, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < channels; ++c) mean[c] += x[r * channels + c] / double(rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < channels; ++c) var[c] += std::pow(x[r * channels + c] - mean[c], 2) / double(rows);
}

struct BatchNormCase {
  int64_t rows, channels;
  float offset;  // added to x: a mean far from zero, where an unshifted variance would cancel
};

TEST_F(HostNormOps, BatchNormTrainingStepMatchesReference) {
  const float epsilon = 1e-3f;
  for (const BatchNormCase k : {BatchNormCase{1, 1, 0.0f}, BatchNormCase{7, 3, 0.5f}, BatchNormCase{1537, 5, 100.0f},
                                BatchNormCase{4000, 64, -3.0f}}) {
    SCOPED_TRACE(::testing::Message() << k.rows << " rows, " << k.channels << " channels, offset " << k.offset);
    const int64_t rows = k.rows, channels = k.channels;
    Floats x = random_floats(rows * channels, rng_, -2.0f, 2.0f);
    for (float& v : x) v += k.offset;
    const Floats shift = random_floats(channels, rng_, k.offset - 0.5f, k.offset + 0.5f);
    const Floats gamma = random_floats(channels, rng_, 0.5f, 1.5f), beta = random_floats(channels, rng_);
    const Floats dy = random_floats(x.size(), rng_);
    Doubles mean_ref, var_ref;
    moments_reference(rows, channels, x, mean_ref, var_ref);
    Doubles sums_ref(2 * channels, 0.0), invstd_ref(channels), y_ref(x.size()), dsums_ref(2 * channels, 0.0);
    Doubles dx_ref(x.size());
    for (int64_t c = 0; c < channels; ++c) invstd_ref[c] = 1 / std::sqrt(var_ref[c] + epsilon);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t i = r * channels + c;
        const double d = double{x[i]} - shift[c], xhat = (x[i] - mean_ref[c]) * invstd_ref[c];
        sums_ref[c] += d;
        sums_ref[channels + c] += d * d;
        y_ref[i] = gamma[c] * xhat + beta[c];
        dsums_ref[c] += dy[i];
        dsums_ref[channels + c] += dy[i] * xhat;
      }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t i = r * channels + c;
        const double xhat = (x[i] - mean_ref[c]) * invstd_ref[c];
        dx_ref[i] = gamma[c] * invstd_ref[c] * (dy[i] - dsums_ref[c] / rows - xhat * dsums_ref[channels + c] / rows);
      }

    auto [sums, mean, var, invstd, y, dsums, dx] =
        batch_norm_step(*backend_, rows, channels, x, shift, gamma, beta, dy, epsilon);
    const double n = double(rows);
    expect_close("sums", sums, sums_ref, 1e-5 * n, 1e-5);
    expect_close("mean", mean, mean_ref, 1e-5, 1e-6);
    expect_close("var", var, var_ref, 1e-5, 1e-4);
    // The variance comes from float sums, so it carries their rounding (~1e-7 of s2 / count), which
    // epsilon may magnify in invstd; the formula itself is checked on the variance it was given.
    Doubles invstd_of_var(channels);
    for (int64_t c = 0; c < channels; ++c) invstd_of_var[c] = 1 / std::sqrt(double{var[c]} + epsilon);
    expect_close("invstd", invstd, invstd_of_var, 0.0, 1e-6);
    expect_close("y", y, y_ref, 1e-4, 1e-4);
    expect_close("backward sums", dsums, dsums_ref, 1e-5 * std::sqrt(n), 1e-4);
    expect_close("dx", dx, dx_ref, 1e-4, 1e-3);

    // Inference: invstd from the variance; gamma and beta may be absent (scale / center off).
    Floats inference_invstd(channels, kNaN);
    backend_->batch_norm_invstd(channels, epsilon, var.data(), inference_invstd.data());
    EXPECT_EQ(inference_invstd, invstd);
    Doubles plain_ref(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      plain_ref[i] = (x[i] - mean_ref[i % channels]) * invstd_ref[i % channels];
    std::fill(y.begin(), y.end(), kNaN);
    backend_->batch_norm_forward(rows, channels, x.data(), mean.data(), invstd.data(), nullptr, nullptr, y.data());
    expect_close("y without gamma and beta", y, plain_ref, 1e-4, 1e-4);
  }
}

TEST_F(HostNormOps, BatchNormSumsDoNotDependOnTheThreadCount) {
  const int64_t rows = 5000, channels = 37;
  const Floats x = random_floats(rows * channels, rng_), shift(channels, 0.25f), dy = random_floats(x.size(), rng_);
  const Floats mean(channels, 0.1f), invstd(channels, 1.7f);
  Floats sums_a(2 * channels), sums_b(2 * channels), dsums_a(2 * channels), dsums_b(2 * channels);
  for (int threads : {1, 2, 3}) {
    auto other = make_host_backend(threads);
    other->bind_current_thread();
    Floats& sums = threads == 1 ? sums_a : sums_b;
    Floats& dsums = threads == 1 ? dsums_a : dsums_b;
    other->batch_norm_sums(rows, channels, x.data(), shift.data(), sums.data());
    other->batch_norm_backward_sums(rows, channels, x.data(), dy.data(), mean.data(), invstd.data(), dsums.data());
    if (threads > 1) {
      EXPECT_EQ(sums_a, sums_b) << threads << " threads";
      EXPECT_EQ(dsums_a, dsums_b) << threads << " threads";
    }
  }
  backend_->bind_current_thread();
}

TEST_F(HostNormOps, BatchNormSumsOfNoRowsAreZero) {
  Floats sums(6, kNaN), dsums(6, kNaN);
  const Floats none(3, 1.0f);
  backend_->batch_norm_sums(0, 3, nullptr, none.data(), sums.data());
  backend_->batch_norm_backward_sums(0, 3, nullptr, nullptr, none.data(), none.data(), dsums.data());
  EXPECT_EQ(sums, Floats(6, 0.0f));
  EXPECT_EQ(dsums, Floats(6, 0.0f));
}

TEST_F(HostNormOps, MovingStatisticsFollowKerasAndSkipABadStep) {
  const Floats mean = {1.0f, -2.0f, 0.5f}, var = {4.0f, 0.25f, 1.0f};
  Floats moving_mean = {0.0f, 0.0f, 1.0f}, moving_var = {1.0f, 1.0f, 2.0f};
  const float good[1] = {3.0f}, bad[1] = {NAN};
  backend_->batch_norm_update_moving(3, 0.99f, mean.data(), var.data(), good, moving_mean.data(), moving_var.data());
  Doubles mean_ref(3), var_ref(3);
  const Doubles old_mean = {0.0, 0.0, 1.0}, old_var = {1.0, 1.0, 2.0};
  for (int c = 0; c < 3; ++c) {
    mean_ref[c] = old_mean[c] * 0.99 + mean[c] * 0.01;
    var_ref[c] = old_var[c] * 0.99 + var[c] * 0.01;
  }
  expect_close("moving mean", moving_mean, mean_ref, 1e-7, 1e-6);
  expect_close("moving var", moving_var, var_ref, 1e-7, 1e-6);
  const Floats kept_mean = moving_mean, kept_var = moving_var;
  backend_->batch_norm_update_moving(3, 0.99f, mean.data(), var.data(), bad, moving_mean.data(), moving_var.data());
  EXPECT_EQ(moving_mean, kept_mean);
  EXPECT_EQ(moving_var, kept_var);
}

// Inverted dropout from the contract: element (r, c) is kept when uniform(seed, stream,
// (first_row + r) * cols + c) >= rate, and then scaled by 1 / (1 - rate).
Doubles dropout_reference(const DropoutSpec& s, int64_t rows, int64_t cols, const Floats& x) {
  Doubles y(x.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const auto index = static_cast<uint64_t>((s.first_row + r) * cols + c);
      const bool keep = random::uniform(s.seed, s.stream, index) >= s.rate;
      y[r * cols + c] = keep ? x[r * cols + c] / (1.0 - double{s.rate}) : 0.0;
    }
  return y;
}

TEST_F(HostNormOps, DropoutMatchesItsDefinition) {
  for (const int64_t rows : {int64_t{3}, int64_t{300}}) {
    for (const float rate : {0.0f, 0.1f, 0.5f, 0.9f}) {
      SCOPED_TRACE(::testing::Message() << rows << " rows, rate " << rate);
      const int64_t cols = 257;
      const DropoutSpec spec{.rate = rate, .seed = 42, .stream = 7, .first_row = 5};
      const Floats x = random_floats(rows * cols, rng_), dy = random_floats(x.size(), rng_);
      Floats y(x.size(), kNaN), dx(x.size(), kNaN);
      backend_->dropout_forward(spec, rows, cols, x.data(), y.data());
      backend_->dropout_backward(spec, rows, cols, dy.data(), dx.data());
      // x times the float 1 / (1 - rate): two roundings.
      expect_close("dropout y", y, dropout_reference(spec, rows, cols, x), 0.0, 2.5e-7);
      expect_close("dropout dx", dx, dropout_reference(spec, rows, cols, dy), 0.0, 2.5e-7);
      size_t kept = 0;
      for (float v : y) kept += v != 0.0f;
      if (rows == 300) {  // 77100 draws: the kept share within 1% of 1 - rate
        EXPECT_NEAR(double(kept) / double(y.size()), 1.0 - rate, 0.01);
      }
      Floats in_place = dy;
      backend_->dropout_backward(spec, rows, cols, in_place.data(), in_place.data());
      EXPECT_EQ(in_place, dx);
    }
  }
  const Floats x(4, 1.0f);
  Floats y(4);
  EXPECT_THROW(backend_->dropout_forward({.rate = 1.0f}, 1, 4, x.data(), y.data()), InvalidArgument);
  EXPECT_THROW(backend_->dropout_forward({.rate = -0.1f}, 1, 4, x.data(), y.data()), InvalidArgument);
}

TEST_F(HostNormOps, DropoutMaskFollowsTheGlobalRowNotTheSplit) {
  const int64_t rows = 11, cols = 13;
  const Floats x = random_floats(rows * cols, rng_);
  const DropoutSpec whole{.rate = 0.3f, .seed = 5, .stream = 123, .first_row = 0};
  Floats y_whole(x.size(), kNaN), y_split(x.size(), kNaN);
  backend_->dropout_forward(whole, rows, cols, x.data(), y_whole.data());
  // Three uneven shares (as three replicas would get them), each told its first global row.
  int64_t first = 0;
  for (const int64_t share : {int64_t{4}, int64_t{0}, int64_t{7}}) {
    DropoutSpec part = whole;
    part.first_row = first;
    backend_->dropout_forward(part, share, cols, x.data() + first * cols, y_split.data() + first * cols);
    first += share;
  }
  EXPECT_EQ(y_split, y_whole);
  // Another stream (the next step, or another layer) draws another mask.
  DropoutSpec next = whole;
  next.stream = 124;
  Floats y_next(x.size(), kNaN);
  backend_->dropout_forward(next, rows, cols, x.data(), y_next.data());
  EXPECT_NE(y_next, y_whole);
}

// Keras's BatchNormalization(momentum=0.99, epsilon=1e-3) training step, composed from the ops as
// a layer would: sums shifted by the moving mean, moments, forward, moving statistics.
TEST_F(HostNormOps, BatchNormTrainingStepMatchesKeras) {
  namespace kr = mirror::keras_reference;
  const int64_t rows = kr::kBnRows, channels = kr::kBnChannels;
  Floats moving_mean(kr::kBnMovingMean, kr::kBnMovingMean + channels);
  Floats moving_var(kr::kBnMovingVar, kr::kBnMovingVar + channels);
  Floats sums(2 * channels, kNaN), mean(channels, kNaN), var(channels, kNaN), invstd(channels, kNaN);
  Floats y(rows * channels, kNaN);
  const float guard[1] = {0.0f};
  backend_->batch_norm_sums(rows, channels, kr::kBnX, moving_mean.data(), sums.data());
  backend_->batch_norm_moments(channels, double(rows), kr::kBnEpsilon, moving_mean.data(), sums.data(), mean.data(),
                               var.data(), invstd.data());
  backend_->batch_norm_forward(rows, channels, kr::kBnX, mean.data(), invstd.data(), kr::kBnGamma, kr::kBnBeta,
                               y.data());
  backend_->batch_norm_update_moving(channels, kr::kBnMomentum, mean.data(), var.data(), guard, moving_mean.data(),
                                     moving_var.data());
  expect_close("y", y, kr::kBnY, 1e-5, 1e-5);
  expect_close("moving mean", moving_mean, kr::kBnNewMovingMean, 1e-6, 1e-6);
  expect_close("moving variance", moving_var, kr::kBnNewMovingVar, 1e-6, 1e-6);
}

// Keras's Dropout(rate=0.3): every element is 0 or x / (1 - rate).
TEST_F(HostNormOps, DropoutScalesLikeKeras) {
  namespace kr = mirror::keras_reference;
  const int64_t count = std::size(kr::kDropoutX);
  Floats y(count, kNaN);
  backend_->dropout_forward({.rate = kr::kDropoutRate, .seed = 3, .stream = 9}, 1, count, kr::kDropoutX, y.data());
  int64_t kept = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (y[i] == 0.0f) continue;
    ++kept;
    EXPECT_NEAR(y[i], kr::kDropoutKept[i], 2.5e-7 * std::abs(kr::kDropoutKept[i])) << "element " << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, count);
}

}  // namespace
}  // namespace mirror
