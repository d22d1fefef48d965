// Losses and metrics, as objects with Keras's names and arguments. A loss or metric knows the op
// spec its backend runs, the labels it accepts, and the statistics slot it owns in a step's sums
// (slot 0 is the loss; metrics follow in the order compile() was given them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mirror/engine/backend.hpp"
#include "mirror/engine/shape.hpp"

namespace mirror {

struct ImageSet;

class Loss {
 public:
  // Keras's default for integer labels: SparseCategoricalCrossentropy on probabilities.
  Loss() = default;
  Loss(std::string name, LossSpec spec) : name_(std::move(name)), spec_(spec) {}

  const std::string& name() const { return name_; }  // Keras's function name: "sparse_categorical_crossentropy"
  const LossSpec& spec() const { return spec_; }
  // The outputs it expects: probabilities through `activation` (softmax, sigmoid) or logits.
  bool from_logits() const { return spec_.from_logits; }

  // Throws InvalidArgument when a model whose output has shape `output` cannot be trained with
  // this loss, saying what would fit.
  void check_output(const Shape& output) const;
  // Throws DataError naming the first label (its value and index) this loss cannot take from
  // `data` for `classes` output columns.
  void check_labels(const ImageSet& data, int64_t classes, const std::string& what) const;

 private:
  std::string name_ = "sparse_categorical_crossentropy";
  LossSpec spec_{};
};

class Metric {
 public:
  // With `resolve_by_shape` (Keras's "accuracy") the kind is chosen at compile time from the
  // model's output width.
  Metric(std::string name, MetricSpec spec, bool resolve_by_shape = false)
      : name_(std::move(name)), spec_(spec), resolve_by_shape_(resolve_by_shape) {}

  const std::string& name() const { return name_; }  // the key in History and the progress bar
  const MetricSpec& spec() const { return spec_; }
  // Keras's "accuracy": binary accuracy for one output column, else (sparse) categorical accuracy.
  Metric resolved_for(int64_t outputs) const;

 private:
  std::string name_;
  MetricSpec spec_;
  bool resolve_by_shape_ = false;
};

namespace losses {
// Integer labels against probabilities (or logits with from_logits).
Loss SparseCategoricalCrossentropy(bool from_logits = false);
// One-hot targets made from the integer labels, optionally smoothed.
Loss CategoricalCrossentropy(bool from_logits = false, float label_smoothing = 0.0f);
// Labels 0/1 against one sigmoid output (or one-hot targets against several).
Loss BinaryCrossentropy(bool from_logits = false, float label_smoothing = 0.0f);
// The label (one output) or its one-hot row (several outputs) as the target.
Loss MeanSquaredError();
}  // namespace losses

namespace metrics {
// Keras's "accuracy": the kind that fits the loss (sparse categorical for integer labels).
Metric Accuracy();
Metric SparseCategoricalAccuracy();
Metric CategoricalAccuracy();
Metric BinaryAccuracy(float threshold = 0.5f);
// The label is among the k highest outputs.
Metric SparseTopKCategoricalAccuracy(int k = 5);
}  // namespace metrics

}  // namespace mirror
