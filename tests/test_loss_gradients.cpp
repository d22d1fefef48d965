// Gradient checks of the loss op: for every loss kind, with and without from_logits, label
// smoothing and gradient_through_activation, the op's `dinput` against central finite differences
// of a double-precision reference of Keras's loss written here (and its summed loss against the
// same reference). With gradient_through_activation the reference is the loss of softmax(z) or
// sigmoid(z), differentiated with respect to z.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>

#include "mirror/engine/host/host_backend.hpp"
#include "op_test_util.hpp"

namespace mirror {
namespace {

using namespace mirror::testing;

using Labels = std::vector<int32_t>;

double clip(double p) { return std::clamp(p, 1e-7, 1 - 1e-7); }
double sigmoid(double z) { return 1 / (1 + std::exp(-z)); }

// Column j's target for `label` (see LossSpec), smoothing applied.
double target(const LossSpec& s, int32_t label, int64_t cols, int64_t j) {
  const bool value = cols == 1 && (s.kind == LossKind::BinaryCrossentropy || s.kind == LossKind::MeanSquaredError);
  const double t = value ? label : (j == label ? 1.0 : 0.0);
  if (s.kind == LossKind::CategoricalCrossentropy) return t * (1 - s.label_smoothing) + s.label_smoothing / cols;
  if (s.kind == LossKind::BinaryCrossentropy) return t * (1 - s.label_smoothing) + 0.5 * s.label_smoothing;
  return t;
}

// One sample's loss, Keras's way.
double sample_loss(const LossSpec& s, const double* y, int32_t label, int64_t cols) {
  double loss = 0;
  switch (s.kind) {
    case LossKind::SparseCategoricalCrossentropy:
    case LossKind::CategoricalCrossentropy: {
      double top = y[0], sum = 0;
      for (int64_t j = 0; j < cols; ++j) top = std::max(top, y[j]), sum += y[j];
      double exp_sum = 0;
      for (int64_t j = 0; j < cols; ++j) exp_sum += std::exp(y[j] - top);
      for (int64_t j = 0; j < cols; ++j) {
        const double log_p = s.from_logits ? y[j] - top - std::log(exp_sum)
                             : s.kind == LossKind::CategoricalCrossentropy ? std::log(clip(y[j] / sum))
                                                                           : std::log(clip(y[j]));
        loss -= target(s, label, cols, j) * log_p;
      }
      return loss;
    }
    case LossKind::BinaryCrossentropy:
      for (int64_t j = 0; j < cols; ++j) {
        const double t = target(s, label, cols, j), v = y[j];
        loss += s.from_logits ? std::max(v, 0.0) - v * t + std::log1p(std::exp(-std::abs(v)))
                              : -(t * std::log(clip(v)) + (1 - t) * std::log(1 - clip(v)));
      }
      return loss / cols;
    case LossKind::MeanSquaredError:
      for (int64_t j = 0; j < cols; ++j) loss += std::pow(y[j] - target(s, label, cols, j), 2);
      return loss / cols;
  }
  return NAN;
}

// scale * the sum of the samples' losses; through the activation when the spec says so.
double loss_reference(const LossSpec& s, Doubles y, const Labels& labels, int64_t cols, double scale) {
  const auto rows = static_cast<int64_t>(labels.size());
  if (s.gradient_through_activation) {
    for (int64_t r = 0; r < rows; ++r) {
      double* row = y.data() + r * cols;
      if (s.kind == LossKind::BinaryCrossentropy) {
        for (int64_t j = 0; j < cols; ++j) row[j] = sigmoid(row[j]);
      } else {
        const double top = *std::max_element(row, row + cols);
        double sum = 0;
        for (int64_t j = 0; j < cols; ++j) sum += row[j] = std::exp(row[j] - top);
        for (int64_t j = 0; j < cols; ++j) row[j] /= sum;
      }
    }
  }
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) total += sample_loss(s, y.data() + r * cols, labels[r], cols);
  return scale * total;
}

struct Case {
  LossSpec spec;
  int64_t cols;
};

std::string describe(const Case& c) {
  const char* kinds[] = {"sparse categorical", "categorical", "binary", "mean squared error"};
  return std::string(kinds[static_cast<int>(c.spec.kind)]) + ", " + std::to_string(c.cols) + " columns" +
         (c.spec.from_logits ? ", from logits" : "") +
         (c.spec.label_smoothing > 0 ? ", smoothing " + std::to_string(c.spec.label_smoothing) : "") +
         (c.spec.gradient_through_activation ? ", through the activation" : "");
}

std::vector<Case> cases() {
  using K = LossKind;
  return {
      {{K::SparseCategoricalCrossentropy}, 5},
      {{K::SparseCategoricalCrossentropy, true}, 5},
      {{K::SparseCategoricalCrossentropy, false, 0.0f, true}, 5},
      {{K::CategoricalCrossentropy}, 5},
      {{K::CategoricalCrossentropy, false, 0.1f}, 5},
      {{K::CategoricalCrossentropy, true}, 5},
      {{K::CategoricalCrossentropy, true, 0.2f}, 5},
      {{K::CategoricalCrossentropy, false, 0.1f, true}, 5},
      {{K::BinaryCrossentropy}, 1},
      {{K::BinaryCrossentropy, false, 0.2f}, 4},
      {{K::BinaryCrossentropy, true}, 1},
      {{K::BinaryCrossentropy, true, 0.1f}, 4},
      {{K::BinaryCrossentropy, false, 0.0f, true}, 1},
      {{K::BinaryCrossentropy, false, 0.2f, true}, 4},
      {{K::MeanSquaredError}, 1},
      {{K::MeanSquaredError}, 3},
  };
}

class LossGradients : public HostBackendTest {
 protected:
  LossGradients() : HostBackendTest(4242) {}
};

TEST_F(LossGradients, EveryLossMatchesFiniteDifferences) {
  const int64_t rows = 6;
  const float scale = 0.3f;
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const LossSpec& s = c.spec;
    Labels labels(rows);
    for (int32_t& l : labels) {
      const bool value_label = c.cols == 1;
      l = value_label ? (s.kind == LossKind::MeanSquaredError ? int32_t(rng_() % 7) - 3 : int32_t(rng_() % 2))
                      : int32_t(rng_() % c.cols);
    }
    // Inputs away from the clipping bounds, so the loss is smooth where it is differentiated.
    const bool probabilities = !s.from_logits && s.kind != LossKind::MeanSquaredError;
    const Floats in = s.gradient_through_activation ? random_floats(rows * c.cols, rng_, -3.0f, 3.0f)
                      : probabilities                ? random_floats(rows * c.cols, rng_, 0.05f, 0.95f)
                                                     : random_floats(rows * c.cols, rng_, -3.0f, 3.0f);
    // The op sees the activation's float output when the gradient goes through it.
    Floats outputs = in;
    if (s.gradient_through_activation) {
      const Activation a = s.kind == LossKind::BinaryCrossentropy ? Activation::Sigmoid : Activation::Softmax;
      backend_->activation_forward(a, rows, c.cols, in.data(), outputs.data());
    }
    Floats d(in.size(), kNaN);
    float stat = 0.0f;
    backend_->loss(s, rows, c.cols, outputs.data(), labels.data(), scale, d.data(), &stat);
    const Loss loss = [&](const Doubles& v) { return loss_reference(s, v, labels, c.cols, scale); };
    expect_gradient("dinput", d, finite_difference(loss, to_doubles(in), 1e-5));
    const Doubles total_ref = {loss_reference(s, to_doubles(in), labels, c.cols, 1.0)};
    expect_close("summed loss", std::span<const float>(&stat, 1), total_ref, 1e-6, 1e-5);
  }
}

TEST_F(LossGradients, ZeroRowsChangeNothing) {
  for (const Case& c : cases()) {
    float stat = 2.0f, d = kNaN;
    backend_->loss(c.spec, 0, c.cols, nullptr, nullptr, 1.0f, &d, &stat);
    EXPECT_EQ(stat, 2.0f) << describe(c);
    EXPECT_TRUE(std::isnan(d));
  }
}

}  // namespace
}  // namespace mirror
