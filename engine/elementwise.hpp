// Element-wise math shared by the host and CUDA backends, written once: activations, losses and
// metrics per row, dropout's mask, batch normalization's per-element formulas, the optimizers and
// the running statistics. Under nvcc these are __host__ __device__; the host backend and its tests
// run the same code as the kernels, except for the activations that need exp, erf or tanh per
// element, which the host runs through oneDNN's vectorised eltwise (engine/host/host_activations.cpp).
#pragma once

#include <math.h>  // expf, logf, erff, sqrtf, isfinite in the global namespace, as CUDA has them

#include <cstddef>
#include <cstdint>

#include "mirror/engine/backend.hpp"
#include "mirror/engine/hd.hpp"
#include "mirror/engine/random.hpp"

namespace mirror::ew {

inline constexpr float kProbabilityEpsilon = 1e-7f;  // Keras's backend.epsilon()

// ---- activations ----

// NaN stays NaN, as in Keras, JAX, TensorFlow and PyTorch, so a diverged layer reaches the loss.
MIRROR_HD inline float relu(float x) { return x <= 0.0f ? 0.0f : x; }
// Gradient of ReLU taken from its output: positive output <=> positive input.
MIRROR_HD inline float relu_backward(float y, float dy) { return y > 0.0f ? dy : 0.0f; }

// 1 / (1 + e^-x) without overflow for large |x|.
MIRROR_HD inline float sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}

// The standard normal's CDF and density: GELU's exact (erf) form, Keras's default approximate=False.
MIRROR_HD inline float normal_cdf(float x) { return 0.5f * (1.0f + erff(x * 0.70710678118654752f)); }
MIRROR_HD inline float normal_pdf(float x) { return 0.39894228040143268f * expf(-0.5f * x * x); }

// y = a(x) for the element-wise activations. Softmax works on whole rows (softmax_row); given it
// here the result is NaN, so a caller that forgot the row-wise path cannot go unnoticed.
MIRROR_HD inline float activation(Activation a, float x) {
  switch (a) {
    case Activation::Linear: return x;
    case Activation::ReLU: return relu(x);
    case Activation::Sigmoid: return sigmoid(x);
    case Activation::Tanh: return tanhf(x);
    case Activation::GELU: return x * normal_cdf(x);
    case Activation::SiLU: return x * sigmoid(x);
    case Activation::Softmax: break;
  }
  return NAN;
}

// dL/dx from dL/dy = dy for the element-wise activations. GELU and SiLU read the input x (see
// backward_needs_input); the others read only the output y = a(x). Softmax: NaN (row-wise).
MIRROR_HD inline float activation_grad(Activation a, float x, float y, float dy) {
  switch (a) {
    case Activation::Linear: return dy;
    case Activation::ReLU: return relu_backward(y, dy);
    case Activation::Sigmoid: return dy * y * (1.0f - y);
    case Activation::Tanh: return dy * (1.0f - y * y);
    case Activation::GELU: return dy * (normal_cdf(x) + x * normal_pdf(x));
    case Activation::SiLU: {
      const float s = sigmoid(x);
      return dy * s * (1.0f + x * (1.0f - s));
    }
    case Activation::Softmax: break;
  }
  return NAN;
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

// ---- losses (see LossSpec) ----

MIRROR_HD inline float clip_probability(float p) {
  return p < kProbabilityEpsilon ? kProbabilityEpsilon : (p > 1.0f - kProbabilityEpsilon ? 1.0f - kProbabilityEpsilon : p);
}
// Keras clips before the log, so the gradient vanishes where clipping was active.
MIRROR_HD inline bool is_clipped(float p) { return p < kProbabilityEpsilon || p > 1.0f - kProbabilityEpsilon; }

// Whether the loss can use `label` with `cols` outputs: a class index for the categorical kinds
// and for one-hot targets; 0 or 1 for binary cross-entropy on one column; any value for mean
// squared error on one column.
MIRROR_HD inline bool label_ok(const LossSpec& s, int32_t label, int64_t cols) {
  const bool per_column_value = s.kind == LossKind::BinaryCrossentropy || s.kind == LossKind::MeanSquaredError;
  if (per_column_value && cols == 1) return s.kind == LossKind::MeanSquaredError || label == 0 || label == 1;
  return label >= 0 && label < cols;
}

// Column j's target for `label`, label smoothing applied (categorical: toward 1 / classes; binary:
// toward 1/2; the sparse kind and mean squared error have none, as in Keras).
MIRROR_HD inline float loss_target(const LossSpec& s, int32_t label, int64_t cols, int64_t j) {
  const bool value_target =
      cols == 1 && (s.kind == LossKind::BinaryCrossentropy || s.kind == LossKind::MeanSquaredError);
  const float t = value_target ? static_cast<float>(label) : (j == label ? 1.0f : 0.0f);
  const float smoothing = s.label_smoothing;
  if (s.kind == LossKind::CategoricalCrossentropy) return t * (1.0f - smoothing) + smoothing / static_cast<float>(cols);
  if (s.kind == LossKind::BinaryCrossentropy) return t * (1.0f - smoothing) + 0.5f * smoothing;
  return t;
}

// Cross-entropy of one row of logits: sum_j t_j (logsumexp(z) - z_j); d = scale (softmax(z) - t).
MIRROR_HD inline float softmax_cross_entropy_row(const LossSpec& s, const float* z, int32_t label, int64_t cols,
                                                 float scale, float* d) {
  float max_value = z[0];
  for (int64_t j = 1; j < cols; ++j) max_value = z[j] > max_value ? z[j] : max_value;
  float sum = 0.0f;
  for (int64_t j = 0; j < cols; ++j) sum += expf(z[j] - max_value);
  const float log_sum = max_value + logf(sum);
  float loss = 0.0f;
  for (int64_t j = 0; j < cols; ++j) {
    const float t = loss_target(s, label, cols, j);
    loss += t * (log_sum - z[j]);
    if (d) d[j] = scale * (expf(z[j] - log_sum) - t);
  }
  return loss;
}

// Sparse cross-entropy of one row of probabilities: -log(clip(p[label])), only the label's column.
MIRROR_HD inline float sparse_probability_cross_entropy_row(const LossSpec& s, const float* p, int32_t label,
                                                            int64_t cols, float scale, float* d) {
  const float p_label = clip_probability(p[label]);
  if (d) {
    for (int64_t j = 0; j < cols; ++j) {
      const float t = j == label ? 1.0f : 0.0f;
      if (s.gradient_through_activation) {
        d[j] = scale * (p[j] - t);
      } else {
        d[j] = (j == label && !is_clipped(p[label])) ? -scale / p_label : 0.0f;
      }
    }
  }
  return -logf(p_label);
}

// Categorical cross-entropy of one row of probabilities, as Keras computes it: q = p / sum(p),
// loss = -sum_j t_j log(clip(q_j)). Through q, dL/dp_k = (g_k - sum_j g_j q_j) / sum(p) with
// g_j = dL/dq_j = -t_j / q_j where q_j is not clipped.
MIRROR_HD inline float categorical_probability_cross_entropy_row(const LossSpec& s, const float* p, int32_t label,
                                                                 int64_t cols, float scale, float* d) {
  float total = 0.0f;
  for (int64_t j = 0; j < cols; ++j) total += p[j];
  const float inv_total = 1.0f / total;
  float loss = 0.0f, dot = 0.0f;
  for (int64_t j = 0; j < cols; ++j) {
    const float q = p[j] * inv_total, t = loss_target(s, label, cols, j);
    loss -= t * logf(clip_probability(q));
    const float g = is_clipped(q) ? 0.0f : -t / q;
    dot += g * q;
    if (d) d[j] = g;
  }
  if (d) {
    for (int64_t j = 0; j < cols; ++j) {
      d[j] = s.gradient_through_activation ? scale * (p[j] - loss_target(s, label, cols, j))
                                           : scale * (d[j] - dot) * inv_total;
    }
  }
  return loss;
}

// Binary cross-entropy, Keras's per-sample value: the mean over the columns of
// -(t log p + (1 - t) log(1 - p)) with p clipped, or from logits max(z, 0) - z t + log1p(e^-|z|).
MIRROR_HD inline float binary_cross_entropy_row(const LossSpec& s, const float* y, int32_t label, int64_t cols,
                                                float scale, float* d) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
  float loss = 0.0f;
  for (int64_t j = 0; j < cols; ++j) {
    const float t = loss_target(s, label, cols, j), v = y[j];
    float g;
    if (s.from_logits) {
      loss += (v > 0.0f ? v : 0.0f) - v * t + log1pf(expf(-fabsf(v)));
      g = sigmoid(v) - t;
    } else {
      const float p = clip_probability(v);
      loss -= t * logf(p) + (1.0f - t) * logf(1.0f - p);
      g = s.gradient_through_activation ? v - t : (is_clipped(v) ? 0.0f : (p - t) / (p * (1.0f - p)));
    }
    if (d) d[j] = scale * g * inv_cols;
  }
  return loss * inv_cols;
}

// Mean squared error, Keras's per-sample value: the mean over the columns of (y - t)^2.
MIRROR_HD inline float mean_squared_error_row(const LossSpec& s, const float* y, int32_t label, int64_t cols,
                                              float scale, float* d) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
  float loss = 0.0f;
  for (int64_t j = 0; j < cols; ++j) {
    const float e = y[j] - loss_target(s, label, cols, j);
    loss += e * e;
    if (d) d[j] = 2.0f * scale * e * inv_cols;
  }
  return loss * inv_cols;
}

// One sample's loss (Keras's per-sample value); when d is not null it also receives scale times the
// loss's gradient with respect to y, or to the activation's input with gradient_through_activation.
// The label must pass label_ok().
MIRROR_HD inline float loss_row(const LossSpec& s, const float* y, int32_t label, int64_t cols, float scale, float* d) {
  switch (s.kind) {
    case LossKind::SparseCategoricalCrossentropy:
      return s.from_logits ? softmax_cross_entropy_row(s, y, label, cols, scale, d)
                           : sparse_probability_cross_entropy_row(s, y, label, cols, scale, d);
    case LossKind::CategoricalCrossentropy:
      return s.from_logits ? softmax_cross_entropy_row(s, y, label, cols, scale, d)
                           : categorical_probability_cross_entropy_row(s, y, label, cols, scale, d);
    case LossKind::BinaryCrossentropy: return binary_cross_entropy_row(s, y, label, cols, scale, d);
    case LossKind::MeanSquaredError: return mean_squared_error_row(s, y, label, cols, scale, d);
  }
  return NAN;
}

// ---- metrics (see MetricSpec) ----

// One sample's metric: 1 or 0 for the accuracies, the share of correct columns for binary accuracy
// with several columns. A label outside [0, cols) counts as wrong for the categorical kinds and
// top-k (and reads nothing out of the row); binary accuracy on one column matches only labels 0
// and 1, on several columns it sees such a label as an all-zero target.
MIRROR_HD inline float metric_row(const MetricSpec& s, const float* y, int32_t label, int64_t cols) {
  switch (s.kind) {
    case MetricKind::SparseCategoricalAccuracy:
    case MetricKind::CategoricalAccuracy: {
      // Keras's argmax: the first index of the row's maximum.
      int64_t best = 0;
      for (int64_t j = 1; j < cols; ++j) best = y[j] > y[best] ? j : best;
      return best == label ? 1.0f : 0.0f;
    }
    case MetricKind::BinaryAccuracy: {
      float correct = 0.0f;
      for (int64_t j = 0; j < cols; ++j) {
        const float t = cols == 1 ? static_cast<float>(label) : (j == label ? 1.0f : 0.0f);
        correct += (y[j] > s.threshold ? 1.0f : 0.0f) == t ? 1.0f : 0.0f;
      }
      return correct / static_cast<float>(cols);
    }
    case MetricKind::SparseTopKCategoricalAccuracy: {
      if (label < 0 || label >= cols) return 0.0f;
      int64_t higher = 0;
      for (int64_t j = 0; j < cols; ++j) higher += y[j] > y[label] ? 1 : 0;
      return higher < s.k ? 1.0f : 0.0f;
    }
  }
  return NAN;
}

// ---- dropout ----

// Whether element `index` = (first_row + row) * cols + col survives (see DropoutSpec).
MIRROR_HD inline bool dropout_keep(const DropoutSpec& s, int64_t index) {
  return random::uniform(s.seed, s.stream, static_cast<uint64_t>(index)) >= s.rate;
}

// The factor applied to the kept elements: 1 / (1 - rate), Keras's inverted dropout.
MIRROR_HD inline float dropout_scale(const DropoutSpec& s) { return 1.0f / (1.0f - s.rate); }

// ---- batch normalization (see Backend::batch_norm_*) ----

// 1 / sqrt(var + epsilon), rounded once. Training (batch_norm_moments) and inference take it from
// the same float variance, so the two agree to the last bit.
MIRROR_HD inline float batch_norm_invstd(double var, float epsilon) {
  return static_cast<float>(1.0 / sqrt(var + static_cast<double>(epsilon)));
}

// One channel's moments from its shifted sums s1 = sum (x - shift), s2 = sum (x - shift)^2 over
// `count` rows. In double: s2 / count - (s1 / count)^2 cancels when the shift is far from the mean.
MIRROR_HD inline void batch_norm_moments(double count, float epsilon, float shift, float s1, float s2, float& mean,
                                         float& var, float& invstd) {
  const double m1 = static_cast<double>(s1) / count;
  double v = static_cast<double>(s2) / count - m1 * m1;
  v = v > 0.0 ? v : 0.0;
  mean = static_cast<float>(static_cast<double>(shift) + m1);
  var = static_cast<float>(v);
  invstd = batch_norm_invstd(var, epsilon);  // from the float variance, as batch_norm_invstd gets it
}

// dL/dx of one element through the batch's own mean and variance: gamma invstd (dy - sum_dy / count
// - xhat sum_dy_xhat / count), xhat = (x - mean) invstd.
MIRROR_HD inline float batch_norm_dx(float x, float dy, float mean, float invstd, float gamma, float sum_dy,
                                     float sum_dy_xhat, double count) {
  const float inv_count = static_cast<float>(1.0 / count);
  const float xhat = (x - mean) * invstd;
  return gamma * invstd * (dy - sum_dy * inv_count - xhat * sum_dy_xhat * inv_count);
}

// Keras's moving statistics: moving * momentum + batch * (1 - momentum).
MIRROR_HD inline float moving_average(float moving, float batch, float momentum) {
  return moving * momentum + batch * (1.0f - momentum);
}

// ---- running statistics and optimizers ----

MIRROR_HD inline bool step_allowed(const float* guard) { return isfinite(guard[0]); }

// Backend::accumulate_stats on one thread: totals[0, count) += step_stats, totals[count] = the
// first step whose loss was not finite (-1 while there is none).
MIRROR_HD inline void accumulate_stats(size_t count, const float* step_stats, float* totals, float step) {
  if (totals[count] >= 0.0f) return;  // stopped at an earlier non-finite loss
  if (!isfinite(step_stats[0])) {
    totals[0] = step_stats[0];
    totals[count] = step;
    return;
  }
  for (size_t i = 0; i < count; ++i) totals[i] += step_stats[i];
}

// Whether `candidate`, met after `best` in a max-pooling window, becomes the window's maximum:
// when it is larger, or when it is the window's first NaN (which then stays). So max pooling
// propagates NaN as Keras's does on every backend, and the gradient goes to the first maximum.
// Written as one negated comparison and one test of `best`: the equivalent
// `candidate > best || (candidate != candidate && best == best)` was miscompiled by GCC 12's AVX2
// vectorisation of the host's max-pooling backward (tests/test_host_isa.cpp caught it).
MIRROR_HD inline bool becomes_max(float candidate, float best) { return !(candidate <= best) && best == best; }
// max(a, b) for max pooling's value alone: NaN when either is NaN.
MIRROR_HD inline float pool_max(float a, float b) { return b > a || b != b ? b : a; }

// fmaxf(a, b) and fminf(a, b) as comparisons, the same value for every pair, NaN included (either
// returns the other argument when one is NaN; equal values, zeros of either sign, give b, as x86's
// maxss and glibc do): GCC does not vectorise fmaxf and fminf without -ffinite-math-only, and the
// optimizer's loop must vectorise (engine/host/host_optimizers.cpp).
MIRROR_HD inline float max_of(float a, float b) { return a > b || b != b ? a : b; }
MIRROR_HD inline float min_of(float a, float b) { return a < b || b != b ? a : b; }

// The options of an OptimizerStep that choose code in optimizer_element. As this struct they are
// read at run time (the GPU kernels, where every thread takes the same branch); as
// FixedOptimizerFeatures they are constants, so the branches fold away and the host's loop over
// elements, left without control flow, vectorises.
struct OptimizerFeatures {
  bool clip = false;      // clipvalue > 0
  bool decay = false;     // weight_decay > 0
  bool momentum = false;  // SGD, RMSprop: momentum > 0 (a momentum slot)
  bool nesterov = false;  // SGD with momentum
  bool amsgrad = false;   // Adam
  bool centered = false;  // RMSprop
};

MIRROR_HD inline OptimizerFeatures optimizer_features(const OptimizerStep& s) {
  OptimizerFeatures f;
  f.clip = s.clipvalue > 0.0f;
  f.decay = s.weight_decay > 0.0f;
  f.momentum = s.momentum > 0.0f;
  f.nesterov = s.nesterov && f.momentum;
  f.amsgrad = s.amsgrad;
  f.centered = s.centered;
  return f;
}

template <OptimizerFeatures kFeatures>
struct FixedOptimizerFeatures {
  static constexpr bool clip = kFeatures.clip, decay = kFeatures.decay, momentum = kFeatures.momentum,
                        nesterov = kFeatures.nesterov, amsgrad = kFeatures.amsgrad, centered = kFeatures.centered;
};

// The rules below take the step's options from `f` (OptimizerFeatures or FixedOptimizerFeatures) and
// read a slot only when f says it exists (its pointer may point past the slots otherwise).

// Keras 3 SGD, one element: m = momentum m - lr g; p += m, or with Nesterov p += momentum m - lr g
// (m already updated); plain p -= lr g without momentum.
template <class Features>
MIRROR_HD inline void sgd(const OptimizerStep& s, const Features& f, float& p, float g, float* m) {
  if (!f.momentum) {
    p -= s.learning_rate * g;
    return;
  }
  *m = s.momentum * *m - s.learning_rate * g;
  p += f.nesterov ? s.momentum * *m - s.learning_rate * g : *m;
}

// Keras 3 Adam, one element: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); with amsgrad
// v_hat = max(v_hat, v) replaces v in the step; p -= alpha m / (sqrt(v) + eps).
template <class Features>
MIRROR_HD inline void adam(const OptimizerStep& s, const Features& f, float& p, float g, float& m, float& v,
                           float* v_hat) {
  m += (g - m) * (1.0f - s.beta1);
  v += (g * g - v) * (1.0f - s.beta2);
  float denominator = v;
  if (f.amsgrad) {
    *v_hat = max_of(*v_hat, v);
    denominator = *v_hat;
  }
  p -= s.alpha * m / (sqrtf(denominator) + s.epsilon);
}

// Keras 3 RMSprop, one element (rho = beta2): vel = rho vel + (1 - rho) g^2; centered: avg = rho avg +
// (1 - rho) g and the denominator is vel - avg^2 + eps, else vel + eps; inc = lr g / sqrt(denominator);
// with momentum mom = momentum mom + inc and p -= mom, else p -= inc.
template <class Features>
MIRROR_HD inline void rmsprop(const OptimizerStep& s, const Features& f, float& p, float g, float& velocity,
                              float* momentum, float* average) {
  const float rho = s.beta2;
  velocity = rho * velocity + (1.0f - rho) * g * g;
  float denominator = velocity + s.epsilon;
  if (f.centered) {
    *average = rho * *average + (1.0f - rho) * g;
    denominator = velocity - *average * *average + s.epsilon;
  }
  const float increment = s.learning_rate * g / sqrtf(denominator);
  if (f.momentum) {
    *momentum = s.momentum * *momentum + increment;
    p -= *momentum;
  } else {
    p -= increment;
  }
}

// Backend::optimizer_update for element i of `count`, the rule fixed at compile time and the options
// the step uses given by `f` (optimizer_features(s), or FixedOptimizerFeatures of it): the gradient
// times `scale` (clipping by norm), clamped by clipvalue, the decoupled decay p -= p wd lr `decay`
// (Keras: p - p * wd * lr), then the rule with its slots, consecutive buffers of `count` floats.
template <OptimizerRule kRule, class Features>
MIRROR_HD inline void optimizer_element(const OptimizerStep& s, const Features& f, float scale, float decay, size_t i,
                                        size_t count, float* params, const float* grads, float* slots) {
  float g = grads[i] * scale;
  if (f.clip) g = min_of(max_of(g, -s.clipvalue), s.clipvalue);
  float& p = params[i];
  if (f.decay) p -= p * s.weight_decay * s.learning_rate * decay;
  if constexpr (kRule == OptimizerRule::SGD) {
    // Without momentum SGD keeps no slot and `slots` may be null: no pointer is formed from it.
    sgd(s, f, p, g, f.momentum ? slots + i : nullptr);
  } else if constexpr (kRule == OptimizerRule::Adam) {
    float* slot = slots + i;
    adam(s, f, p, g, slot[0], slot[count], slot + 2 * count);
  } else {
    float* slot = slots + i;
    rmsprop(s, f, p, g, slot[0], slot + count, slot + (f.momentum ? 2 : 1) * count);
  }
}

// The same with the step's options read at run time.
template <OptimizerRule kRule>
MIRROR_HD inline void optimizer_element(const OptimizerStep& s, float scale, float decay, size_t i, size_t count,
                                        float* params, const float* grads, float* slots) {
  optimizer_element<kRule>(s, optimizer_features(s), scale, decay, i, count, params, grads, slots);
}

// The variable of `segments` (sorted bounds, bounds[0] = 0) that holds element i: a binary search,
// for kernels that see single elements.
MIRROR_HD inline int64_t segment_of(const int64_t* bounds, int64_t segments, int64_t i) {
  int64_t lo = 0, hi = segments - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (bounds[mid] <= i) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Keras's clip_by_norm factor clip / max(norm, clip) from a sum of squares (clip_by_global_norm's
// clip * min(1 / norm, 1 / clip) is the same number).
MIRROR_HD inline float clip_factor(double sum_of_squares, float clip_norm) {
  const double norm = sqrt(sum_of_squares);
  return static_cast<float>(double{clip_norm} / (norm > clip_norm ? norm : double{clip_norm}));
}

}  // namespace mirror::ew
