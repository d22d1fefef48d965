// Losses and metrics: their Keras names, the labels they accept, and the choice behind "accuracy".
#include "mirror/model/losses.hpp"

#include <cmath>

#include "mirror/engine/data/dataset.hpp"
#include "mirror/engine/error.hpp"

namespace mirror {

void Loss::check_output(const Shape& output) const {
  MIRROR_REQUIRE(output.rank() == 1, InvalidArgument, "the model's output has shape ", output, "; ", name_,
                 " needs one row of outputs per sample (end with a Dense layer, or Flatten first)");
  const bool categorical = spec_.kind == LossKind::SparseCategoricalCrossentropy ||
                           spec_.kind == LossKind::CategoricalCrossentropy;
  MIRROR_REQUIRE(!categorical || output[0] >= 2, InvalidArgument, name_, " needs at least 2 output units (one per class), the model has ",
                 output[0]);
}

void Loss::check_labels(const ImageSet& data, int64_t classes, const std::string& what) const {
  const bool binary_scalar = spec_.kind == LossKind::BinaryCrossentropy && classes == 1;
  if (spec_.kind == LossKind::MeanSquaredError && classes == 1) return;  // any value is a target
  const int64_t limit = binary_scalar ? 2 : classes;
  for (size_t i = 0; i < data.labels.size(); ++i) {
    const int32_t label = data.labels[i];
    MIRROR_REQUIRE(label >= 0 && label < limit, DataError, "label ", label, " at index ", i, " of the ", what,
                   " is outside [0, ", limit, "): ",
                   binary_scalar ? std::string("binary cross-entropy with one output takes labels 0 and 1")
                                 : str("the model's last layer has ", classes, " units"));
  }
}

Metric Metric::resolved_for(int64_t outputs) const {
  if (!resolve_by_shape_) return *this;
  // Keras decides by the shapes: one output column is a binary prediction (threshold 0.5, whatever
  // the loss's from_logits); several are class scores. Mirror's targets are integer labels (the
  // categorical losses make one-hot rows of them), so categorical accuracy is the sparse one.
  if (outputs == 1) return Metric(name_, {.kind = MetricKind::BinaryAccuracy, .threshold = 0.5f});
  return Metric(name_, {MetricKind::SparseCategoricalAccuracy});
}

namespace {

float checked_smoothing(float s) {
  MIRROR_REQUIRE(s >= 0.0f && s <= 1.0f, InvalidArgument, "label_smoothing must be in [0, 1], got ", s);
  return s;
}

}  // namespace

Loss losses::SparseCategoricalCrossentropy(bool from_logits) {
  return Loss("sparse_categorical_crossentropy", {.kind = LossKind::SparseCategoricalCrossentropy, .from_logits = from_logits});
}

Loss losses::CategoricalCrossentropy(bool from_logits, float label_smoothing) {
  return Loss("categorical_crossentropy", {.kind = LossKind::CategoricalCrossentropy, .from_logits = from_logits,
                                           .label_smoothing = checked_smoothing(label_smoothing)});
}

Loss losses::BinaryCrossentropy(bool from_logits, float label_smoothing) {
  return Loss("binary_crossentropy", {.kind = LossKind::BinaryCrossentropy, .from_logits = from_logits,
                                      .label_smoothing = checked_smoothing(label_smoothing)});
}

Loss losses::MeanSquaredError() { return Loss("mean_squared_error", {.kind = LossKind::MeanSquaredError}); }

Metric metrics::Accuracy() { return Metric("accuracy", {MetricKind::SparseCategoricalAccuracy}, true); }
Metric metrics::SparseCategoricalAccuracy() {
  return Metric("sparse_categorical_accuracy", {MetricKind::SparseCategoricalAccuracy});
}
Metric metrics::CategoricalAccuracy() { return Metric("categorical_accuracy", {MetricKind::CategoricalAccuracy}); }
Metric metrics::BinaryAccuracy(float threshold) {
  return Metric("binary_accuracy", {.kind = MetricKind::BinaryAccuracy, .threshold = threshold});
}
Metric metrics::SparseTopKCategoricalAccuracy(int k) {
  MIRROR_REQUIRE(k >= 1, InvalidArgument, "SparseTopKCategoricalAccuracy needs k >= 1, got ", k);
  return Metric("sparse_top_k_categorical_accuracy", {.kind = MetricKind::SparseTopKCategoricalAccuracy, .k = k});
}

}  // namespace mirror
