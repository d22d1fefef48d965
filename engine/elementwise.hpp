// Element-wise math shared by the host and CUDA backends, written once. Under nvcc these are
// __host__ __device__; the host backend and its tests run exactly the same code.
#pragma once

#include <math.h>  // expf, logf, sqrtf, isfinite in the global namespace, as CUDA has them

#include <cstdint>

#include "engine/backend.hpp"

#if defined(__CUDACC__)
#define MIRROR_HD __host__ __device__
#else
#define MIRROR_HD
#endif

namespace mirror::ew {

inline constexpr float kProbabilityEpsilon = 1e-7f;  // Keras's backend.epsilon()

MIRROR_HD inline float relu(float x) { return x > 0.0f ? x : 0.0f; }
// Gradient of ReLU taken from its output: positive output <=> positive input.
MIRROR_HD inline float relu_backward(float y, float dy) { return y > 0.0f ? dy : 0.0f; }

MIRROR_HD inline float clip_probability(float p) {
  return p < kProbabilityEpsilon ? kProbabilityEpsilon : (p > 1.0f - kProbabilityEpsilon ? 1.0f - kProbabilityEpsilon : p);
}

// Numerically stable softmax of one row, in place.
MIRROR_HD inline void softmax_row(float* y, int64_t cols) {
  float max_value = y[0];
  for (int64_t j = 1; j < cols; ++j) max_value = y[j] > max_value ? y[j] : max_value;
  float sum = 0.0f;
  for (int64_t j = 0; j < cols; ++j) {
    y[j] = expf(y[j] - max_value);
    sum += y[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < cols; ++j) y[j] *= inv;
}

// dz = J_softmax(y)^T dy for one row, in place on dy: dz_j = y_j (dy_j - sum_k y_k dy_k).
MIRROR_HD inline void softmax_backward_row(const float* y, float* dy, int64_t cols) {
  float dot = 0.0f;
  for (int64_t j = 0; j < cols; ++j) dot += y[j] * dy[j];
  for (int64_t j = 0; j < cols; ++j) dy[j] = y[j] * (dy[j] - dot);
}

// Cross-entropy of one row of probabilities against `label`. Adds to loss/correct and writes the
// scaled gradient (with respect to the probabilities, or to the softmax logits) into d (may be null).
// Accuracy follows Keras: the prediction is the first index of the row's maximum.
MIRROR_HD inline void cross_entropy_row(const float* p, int32_t label, int64_t cols, float scale,
                                        bool from_softmax_logits, float* d, float& loss, float& correct) {
  int64_t best = 0;
  for (int64_t j = 1; j < cols; ++j) best = p[j] > p[best] ? j : best;
  correct += best == label ? 1.0f : 0.0f;
  const float p_label = clip_probability(p[label]);
  loss += -logf(p_label);
  if (!d) return;
  for (int64_t j = 0; j < cols; ++j) {
    if (from_softmax_logits) {
      d[j] = scale * (p[j] - (j == label ? 1.0f : 0.0f));
    } else {
      // Keras clips before the log, so the gradient vanishes where clipping was active.
      const bool clipped = p[label] < kProbabilityEpsilon || p[label] > 1.0f - kProbabilityEpsilon;
      d[j] = (j == label && !clipped) ? -scale / p_label : 0.0f;
    }
  }
}

MIRROR_HD inline bool step_allowed(const float* stats) { return isfinite(stats[0]); }

// Backend::accumulate_stats on one thread: totals = {loss sum, correct, first bad step or -1}.
MIRROR_HD inline void accumulate_stats(const float* step_stats, float* totals, float step) {
  if (totals[2] >= 0.0f) return;  // stopped at an earlier non-finite loss
  if (!isfinite(step_stats[0])) {
    totals[0] = step_stats[0];
    totals[2] = step;
    return;
  }
  totals[0] += step_stats[0];
  totals[1] += step_stats[1];
}

// Keras 3 Adam, one element: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); p -= alpha m / (sqrt(v) + eps).
MIRROR_HD inline void adam(const AdamStep& s, float& p, float g, float& m, float& v) {
  m += (g - m) * (1.0f - s.beta1);
  v += (g * g - v) * (1.0f - s.beta2);
  p -= s.alpha * m / (sqrtf(v) + s.epsilon);
}

// Keras 3 SGD, one element: m = momentum m - lr g; p += m (plain p -= lr g without momentum).
MIRROR_HD inline void sgd(const SgdStep& s, float& p, float g, float* m) {
  if (m) {
    *m = s.momentum * *m - s.learning_rate * g;
    p += *m;
  } else {
    p -= s.learning_rate * g;
  }
}

}  // namespace mirror::ew
